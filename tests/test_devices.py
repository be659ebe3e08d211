"""Pages run with their data on a second device, on the CPU: a tensor that crosses devices fails here.

On a GPU the loaders hold the data on cuda:0 while a model a cell builds starts on the CPU; a cell
that feeds one to the other without `.to(device)` raises "Expected all tensors to be on the same
device" there and nowhere in a CPU-only test run (gpu_review.md, finding 2). torch's lazy device
(the TorchScript backend, shipped in every torch wheel) is a second device that really computes, on
the CPU, and refuses CPU inputs the way CUDA does: with `cnnlib.config.device()` answering `lazy`,
the data, `cnnlib.setup()`'s `device` and fit all use it, as they use cuda:0 on a GPU.
"""
import functools
import json
from pathlib import Path

import pytest
import torch

import cnnlib
from cnnlib import config

ROOT = Path(__file__).resolve().parent.parent
# matplotlib converting a lazy tensor through numpy's old __array__ signature: the stand-in's, not a page's
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Pages that run in a few seconds at the smoke budget; each reads its data from the loaders and
# builds its models on the CPU, as a student's cell does, and asserts nothing of its accuracy.
PAGES = [
    "chapters/01_mlp/04_fashion_mnist.ipynb",   # finding 2: a CPU model given a batch of the loader's
    "chapters/01_mlp/02_activations_and_mlps.ipynb",
    "chapters/01_mlp/03_losses.ipynb",
]
# model.to("cuda") keeps each Parameter object, as an optimiser built on the CPU needs; model.to("lazy")
# makes new ones (another tensor type) unless torch swaps the tensors in place, which the fixture
# asks for. Without it an optimiser built before fit placed the model would hold stale parameters
# and fit (rightly) refuses to train nothing.


@functools.cache
def _lazy_backend():
    """None once the backend works (it registers once per process), else why not."""
    try:
        import torch._lazy.ts_backend
        torch._lazy.ts_backend.init()
        torch.ones(1).to("lazy").cpu()
    except Exception as error:  # a torch built without it
        return f"torch's lazy device is not available here ({error})"
    return None


def _lazy_device():
    if reason := _lazy_backend():
        pytest.skip(reason)
    return torch.device("lazy")


def _save_lazy_as_cpu(save):
    """torch.save of lazy tensors, which have no storage to write (CUDA tensors have one)."""
    def cpu(x):
        return x.cpu() if isinstance(x, torch.Tensor) and x.device.type == "lazy" else x

    def saving(obj, *args, **kwargs):
        return save(torch.utils._pytree.tree_map(cpu, obj), *args, **kwargs)
    return saving


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """The data and the training device on `lazy`, models built on the CPU; cwd a scratch folder."""
    device = _lazy_device()
    monkeypatch.setattr(config, "device", lambda: device)
    monkeypatch.setattr(torch, "save", _save_lazy_as_cpu(torch.save))
    monkeypatch.setattr(torch.__future__, "get_swap_module_params_on_conversion", lambda: True)
    monkeypatch.setenv("CNNLIB_BUDGET", "smoke")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    import matplotlib
    matplotlib.use("Agg")
    return device


def run_code_cells(path):
    """Every code cell of a notebook, in order, in one namespace (a kernel's)."""
    cells = [c for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code"]
    namespace = {"__name__": "__main__"}
    for index, cell in enumerate(cells):
        source = "".join(cell["source"])
        try:
            exec(compile(source, f"{Path(path).name} code cell {index}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{path}, code cell {index} failed with its data on another device:\n"
                                 f"{source}\n-> {type(error).__name__}: {error}") from error
    return namespace


def test_the_stand_in_refuses_a_cpu_model_on_its_data(elsewhere):
    # the stand-in is worth something only if it fails as CUDA does
    model = cnnlib.models.softmax_regression(num_inputs=4, num_classes=2)
    with pytest.raises(RuntimeError, match="not a lazy tensor"):
        model(torch.ones(3, 4, device=elsewhere))
    assert model.to(elsewhere)(torch.ones(3, 4, device=elsewhere)).cpu().shape == (3, 2)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: Path(p).stem)
def test_page_runs_with_its_data_on_another_device(elsewhere, page):
    namespace = run_code_cells(ROOT / page)
    assert namespace["device"] == elsewhere


def test_runtimes_page_keeps_its_device_once_a_gpu_run_is_recorded(elsewhere, tmp_path):
    # finding 5: the table's loop once overwrote `device` with the name of the last row's device,
    # and torch.device("Tesla T4") raised on every machine
    page = ROOT / "chapters/90_appendix/02_runtimes.ipynb"
    recorded = (page.parent / "runtimes.csv").read_text().rstrip("\n").splitlines()
    gpu_row = "chapters/01_mlp/04_fashion_mnist.ipynb,full,Tesla T4,61.0,2.14.1+cu130,2026-12-01,2,0.10"
    (tmp_path / "runtimes.csv").write_text("\n".join([*recorded, gpu_row]) + "\n")
    namespace = run_code_cells(page)
    assert namespace["device"] == elsewhere
    assert namespace["speeds"] is None   # GPU speeds are not tabulated as a CPU's slowdowns
