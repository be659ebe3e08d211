"""tools/setup_env.sh, as `make` runs it: any VENV path works, and a python3 that cannot make
an environment is refused before anything is installed, naming what to install.

No test here installs anything: an environment whose stamp is current only has its cnnlib
looked up, and the python3 checks run before the first pip call."""
import hashlib
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "setup_env.sh"


def current_stamp():
    """The stamp setup_env.sh writes after a full install: its requirement files' hash."""
    files = ("requirements.txt", "requirements-dev.txt", "pyproject.toml")
    return hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files)).hexdigest()[:16]


def installed_env(where):
    """A tiny environment that imports this checkout's cnnlib and carries the current stamp."""
    venv.EnvBuilder(symlinks=True, with_pip=False).create(where)
    site = where / Path(sysconfig.get_path("purelib", vars={"base": ""}).lstrip("/"))
    (site / "course.pth").write_text(f"{ROOT}\n")
    (where / ".installed").write_text(current_stamp() + "\n")
    return where


def setup_env(venv_arg, cwd, path=None):
    env = dict(os.environ, PATH=path or os.environ["PATH"])
    return subprocess.run(["bash", str(SCRIPT), str(venv_arg)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("layout", ["relative", "absolute", "link to a cached one"])
def test_a_current_environment_is_accepted_at_any_path(tmp_path, layout):
    (clone := tmp_path / "clone").mkdir()
    if layout == "link to a cached one":           # what .ci/run does with .venv
        (clone / ".venv").symlink_to(installed_env(tmp_path / "cache" / "venv"))
    else:
        installed_env(clone / ".venv")
    out = setup_env(clone / ".venv" if layout == "absolute" else ".venv", cwd=clone)
    assert out.returncode == 0, out.stderr
    assert out.stdout == out.stderr == ""           # nothing installed, nothing to say
    assert (clone / ".venv" / ".installed").read_text().strip() == current_stamp()


def fake_python3(tmp_path, version, has_ensurepip):
    """A python3 on PATH that answers setup_env.sh's one question as an old or a bare Debian one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (py := bin_dir / "python3").write_text(f"#!/bin/sh\necho {version} {int(has_ensurepip)}\n")
    py.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("version, has_ensurepip, expected", [
    ("3.9", True, "python3 is Python 3.9; the course needs 3.10 or newer"),
    ("3.12", False, "install the python3-venv package"),
])
def test_a_python3_that_cannot_make_the_environment_is_named(tmp_path, version, has_ensurepip, expected):
    out = setup_env(".venv", cwd=tmp_path, path=fake_python3(tmp_path, version, has_ensurepip))
    assert out.returncode != 0
    assert expected in out.stderr
    assert not (tmp_path / ".venv").exists(), "nothing is made before the check passes"

