"""The notebooks' bootstrap cell, run as Colab runs it, in a throwaway environment.

Colab is simulated honestly but offline: a new virtual environment whose preinstalled packages
(torch, numpy, pandas, matplotlib, ...) are this environment's, linked in read-only fashion
(pip never uninstalls outside its own environment), a stand-in `google.colab` module imported
before the cell as Colab's kernel does, and `CNNLIB_INSTALL_SOURCE` pointing the cell at a copy
of this checkout instead of the repository URL. pip runs with no index; the helpers that are
"missing" come from wheels repacked from this environment. Nothing in this environment changes.
"""
import base64
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from set_bootstrap import canonical_source, first_code_cell, notebooks  # noqa: E402

PREINSTALLED = ("torch", "numpy", "pandas", "matplotlib")
HELPERS = ("torchinfo", "torchmetrics")


def repack_as_wheel(dist_name, wheelhouse):
    """A wheel of an installed pure-Python distribution, built from its installed files."""
    dist = md.distribution(dist_name)
    name, version = dist.metadata["Name"].replace("-", "_"), dist.version
    wheel = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in dist.files:
            parts = f.parts
            if parts[0].startswith("..") or "__pycache__" in parts or f.name in ("RECORD", "INSTALLER", "direct_url.json"):
                continue
            data = f.locate().read_bytes()
            zf.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{f},sha256={digest},{len(data)}")
        info = next(str(f.parent) for f in dist.files if f.name == "METADATA")
        if not any(str(f).endswith("WHEEL") for f in dist.files):
            zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            records.append(f"{info}/WHEEL,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records + [f"{info}/RECORD,,"]) + "\n")
    return wheel


def colab_like_env(tmp, hide):
    """A venv that sees this environment's packages except those named in `hide`."""
    venv = tmp / "colab"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pre = tmp / "preinstalled"            # outside the venv: pip will not uninstall from it
    pre.mkdir()
    ours = Path(site.getsitepackages()[0])
    for entry in ours.iterdir():
        low = entry.name.lower()
        if low.startswith(("cnnlib", "__editable__", "a1_coverage")) or low.startswith(hide):
            continue
        (pre / entry.name).symlink_to(entry)
    (colab_stub := tmp / "stub" / "google" / "colab").mkdir(parents=True)   # namespace `google`
    (colab_stub / "__init__.py").write_text('"""Stand-in for Colab\'s google.colab."""\n')
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "zz_colab.pth").write_text(
        f"import site; site.addsitedir({str(pre)!r}); site.addsitedir({str(tmp / 'stub')!r})\n")
    return venv / "bin" / "python"


def checkout_copy(tmp):
    src = tmp / "course"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "cnnlib", src / "cnnlib", ignore=shutil.ignore_patterns("__pycache__"))
    return src


RUNNER = """
import importlib.metadata as md, json, sys
import google.colab                      # Colab's kernel has imported it before the first cell
before = {{p: md.version(p) for p in {pre!r}}}
exec(compile(open(sys.argv[1]).read(), "bootstrap-cell", "exec"))
print(json.dumps({{"before": before, "after": {{p: md.version(p) for p in {pre!r}}},
                  "cnnlib": cnnlib.__file__,
                  "helpers": {{h: str(md.distribution(h).locate_file("")) for h in {helpers!r}}}}}))
"""


@pytest.mark.parametrize("helpers", ["missing", "present"])
def test_bootstrap_as_colab_runs_it(tmp_path, helpers):
    hide = HELPERS if helpers == "missing" else ()
    python = colab_like_env(tmp_path, hide)
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    for dist in hide:
        repack_as_wheel(dist, wheelhouse)
    cell = tmp_path / "cell.py"
    cell.write_text(canonical_source())
    (runner := tmp_path / "runner.py").write_text(RUNNER.format(pre=PREINSTALLED, helpers=HELPERS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(CNNLIB_INSTALL_SOURCE=str(checkout_copy(tmp_path)), CNNLIB_BUDGET="smoke",
               PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_COMPILE="1", PIP_CONFIG_FILE=os.devnull)
    out = subprocess.run([str(python), str(runner), str(cell)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert any(line.startswith("budget: smoke | device:") for line in lines), out.stdout
    result = json.loads(lines[-1])
    assert result["before"] == result["after"], "the bootstrap changed a package Colab preinstalls"
    assert result["cnnlib"].startswith(str(tmp_path / "colab")), "cnnlib not installed by the cell"
    for dist, where in result["helpers"].items():   # installed by the cell only when missing
        assert where.startswith(str(tmp_path / ("colab" if dist in hide else "preinstalled"))), where

