from cnnlib import _text, budget, evidence, exercise


def test_wrap_keeps_short_lines_and_wraps_long_ones_within_the_column():
    long = "checked at the cpu budget: " + "word " * 30
    text = _text.wrap("short line\n" + long)
    lines = text.splitlines()
    assert lines[0] == "short line"
    assert len(lines) > 2 and max(map(len, lines)) <= _text.COLUMN
    assert all(line.startswith("  ") for line in lines[2:])
    assert " ".join(text.split()) == " ".join(("short line " + long).split())  # no word lost


def test_claims_exercise_checks_verdicts_and_schedules_print_within_the_column(capsys):
    statement = "with G's learning rate five times D's, every seed collapsed early and stayed collapsed"
    evidence.claim(True, statement, budget="cpu")
    exercise.check("exercise 1", 1.0, expected=2.0, hint="the shrink is applied once per step, " * 3)
    comparison = evidence.compare({"a rather long configuration name": [1.0, 2.0, 3.0],
                                   "baseline": [0.5, 1.0, 2.0]}, "baseline")
    print(comparison.verdicts())
    print(budget.schedule(epochs=3, budget="cpu", some_long_setting_name=12345, another_setting=(1, 2, 3),
                          yet_another_one="a value"))
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= _text.COLUMN
    assert "collapsed early and stayed collapsed" in " ".join(out.split())
    assert "a rather long configuration name:" in out and "yet_another_one=a value" in " ".join(out.split())


def _sanitize(text):
    """nbval's sanitizing of outputs, with the course's rules (nbval_sanitize.cfg)."""
    import configparser
    import re
    from pathlib import Path
    rules = configparser.ConfigParser()
    rules.read(Path(__file__).resolve().parent.parent / "nbval_sanitize.cfg")
    for section in rules.sections():
        text = re.sub(rules[section]["regex"], rules[section]["replace"], text)
    return text


def test_a_claim_stored_at_cpu_compares_equal_to_the_same_claim_at_smoke(capsys, monkeypatch):
    statement = "at the same batch size the one-stage detector trains more than twice as many scenes a second"
    monkeypatch.setenv("CNNLIB_BUDGET", "cpu")
    evidence.claim(True, statement)
    print("next output")
    stored = capsys.readouterr().out
    monkeypatch.setenv("CNNLIB_BUDGET", "smoke")
    evidence.claim(True, statement)
    print("next output")
    smoke = capsys.readouterr().out
    assert stored != smoke
    assert _sanitize(stored) == _sanitize(smoke) == "CLAIM\nnext output\n"
    # an output stored before claims wrapped (one long line) compares equal too
    assert _sanitize(f"checked at the cpu budget: {statement}\nnext output\n") == _sanitize(smoke)
