"""cnnlib's fit against d2l's train_ch6: same model, data, batch, optimiser and epochs.

    python benchmarks/bench.py                      # every model, the budget of this device
    python benchmarks/bench.py --models lenet --epochs 10

Both loops run in this one process, one after the other, from the same initial weights. Each is
timed on the wall clock for the whole run: data loading, every epoch's test pass, and (for
cnnlib on CUDA) the CUDA-graph capture. Printed per model and loop: wall time, training
examples/s, final test accuracy, peak memory (GPU: allocated by torch; CPU: the peak growth of
this process's resident memory during the run; d2l's 4 loader workers are separate processes
and not counted), and the ratio; then cnnlib's per-epoch breakdown (data, step, evaluation).
"""
import argparse
import contextlib
import importlib.util
import io
import json
import platform
import threading
import time
from datetime import date
from pathlib import Path

import cnnlib  # first: it sets the OpenMP wait policy before torch starts its threads
import torch
import torch.nn as nn
import torchvision
from torchvision import transforms
from cnnlib import config, data, models

# Per model: data set, builder, batch, SGD learning rate, input size, and the schedule on each device.
# The DLfS net and ResNet-18 are trained with plain SGD here because train_ch6 only knows SGD.
MODELS = {
    "lenet": dict(dataset="FashionMNIST", build=models.lenet5_d2l, batch=256, lr=0.9, resize=None,
                  cpu=dict(epochs=2), cuda=dict(epochs=10)),
    "dlfs": dict(dataset="MNIST", build=lambda: models.deep_convnet(dropout_logits=False), batch=128,
                 lr=0.1, resize=None, cpu=dict(epochs=1, train_size=20_000), cuda=dict(epochs=10)),
    "resnet18": dict(dataset="FashionMNIST", build=lambda: resnet18_gray(), batch=128, lr=0.05, resize=96,
                     cpu=dict(epochs=1, train_size=2_048, test_size=1_024), cuda=dict(epochs=5)),
}

# The speed-ups the course aims for, on the wall clock against train_ch6 (issue 28).
GOALS = {("cuda", "lenet"): 10}


def resnet18_gray():
    """torchvision's ResNet-18 for 1-channel 96x96 images and 10 classes (d2l resizes to 96)."""
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def d2l_init(net):
    """train_ch6's own initialisation (Xavier-uniform weights, default biases), applied to both."""
    for m in net.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    return net


def subset_indices(n_total, n, seed=0):
    if n is None or n >= n_total:
        return None
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def d2l_loaders(name, batch, resize, train_size, test_size):
    """d2l.load_data_fashion_mnist, reading from cnnlib's data root (d2l's is fixed to ../data)."""
    import d2l.torch as d2l
    trans = transforms.Compose(([transforms.Resize(resize)] if resize else []) + [transforms.ToTensor()])
    cls = getattr(torchvision.datasets, name)
    out = []
    for train, size in ((True, train_size), (False, test_size)):
        ds = cls(root=str(config.data_root()), train=train, transform=trans, download=False)
        keep = subset_indices(len(ds), size)
        if keep is not None:
            ds = torch.utils.data.Subset(ds, keep.tolist())
        out.append(torch.utils.data.DataLoader(ds, batch, shuffle=train, num_workers=d2l.get_dataloader_workers()))
    return out


class PeakMemory:
    """Peak GPU memory, or the peak growth of this process's resident memory, during a block."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self.base, self.running = self._rss(), True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.running = False
            self.thread.join()

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.02)

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096


def run_d2l(spec, plan, device, initial):
    import d2l.torch as d2l
    net = spec["build"]()
    net.load_state_dict(initial)
    train_iter, test_iter = d2l_loaders(spec["dataset"], spec["batch"], spec["resize"], plan["train_size"],
                                        plan["test_size"])
    net.apply = lambda fn: net  # the same initial weights as cnnlib: skip train_ch6's own re-init
    with PeakMemory(device) as mem, contextlib.redirect_stdout(io.StringIO()) as out:
        start = time.perf_counter()
        d2l.train_ch6(net, train_iter, test_iter, plan["epochs"], spec["lr"], device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    test_acc = float(out.getvalue().split("test acc")[-1].split()[0])
    return dict(wall_s=wall, test_acc=test_acc, peak_mem=mem.peak,
                examples=len(train_iter.dataset) * plan["epochs"])


def run_cnnlib(spec, plan, device, initial, **options):
    """options go to fit: compile=True (compilation counted in the wall time), channels_last."""
    net = spec["build"]()
    net.load_state_dict(initial)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        train, test = data.loaders(spec["dataset"], spec["batch"], train_size=plan["train_size"],
                                   test_size=plan["test_size"], resize=spec["resize"], device=device)
        hist = cnnlib.fit(net, train, test, epochs=plan["epochs"], device=device, quiet=True,
                          optimizer=torch.optim.SGD(net.parameters(), lr=spec["lr"]), **options)
        wall = time.perf_counter() - start
    # data: one more pass over the loader alone (same batches), to split the epoch into its parts
    t0 = time.perf_counter()
    for x, y in train:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    data_s = time.perf_counter() - t0
    epochs = [dict(epoch=r["epoch"], data_s=data_s, step_s=r["seconds"] - r["eval_seconds"] - data_s,
                   eval_s=r["eval_seconds"]) for r in hist.rows]
    return dict(wall_s=wall, test_acc=hist.last["val_acc"], peak_mem=mem.peak,
                examples=train.num_examples * plan["epochs"], epochs=epochs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, help="override every model's epochs")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results")))
    parser.add_argument("--without-d2l", action="store_true", help="time cnnlib alone (d2l is not installed)")
    parser.add_argument("--compile", action="store_true", help="cnnlib trains a torch.compile'd model "
                        "(its compilation counted in the wall time)")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                        help="fit's memory format: auto is fit's default for the device")
    args = parser.parse_args()
    options = dict(compile=args.compile, channels_last=dict(auto=None, on=True, off=False)[args.channels_last])
    with_d2l = not args.without_d2l
    if with_d2l and importlib.util.find_spec("d2l") is None:
        raise SystemExit("bench.py: d2l is not installed (pip install --no-deps d2l==1.0.3, or the wheels in "
                         "tools/gpu_wheels.txt); or pass --without-d2l to time cnnlib alone")
    device = config.device()
    kind = "cuda" if device.type == "cuda" else "cpu"
    name = torch.cuda.get_device_name() if kind == "cuda" else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    print(f"device: {name} | torch {torch.__version__} | {date.today()}")
    results = {}
    for key in args.models.split(","):
        spec = MODELS[key]
        plan = dict(epochs=1, train_size=None, test_size=None) | spec[kind]
        if args.epochs:
            plan["epochs"] = args.epochs
        torch.manual_seed(0)
        initial = {k: v.clone() for k, v in d2l_init(spec["build"]()).state_dict().items()}
        ours = run_cnnlib(spec, plan, device, initial, **options)
        theirs = run_d2l(spec, plan, device, initial) if with_d2l else None
        results[key] = dict(plan=plan, batch=spec["batch"], lr=spec["lr"], cnnlib_options=options, cnnlib=ours,
                            d2l=theirs)
        print(f"\n{key} on {spec['dataset']} ({plan}, batch {spec['batch']}, SGD lr {spec['lr']}):")
        for loop, r in (("cnnlib", ours), ("d2l", theirs)):
            if r is not None:
                print(f"  {loop:<7} wall {r['wall_s']:7.1f} s  {r['examples'] / r['wall_s']:9.0f} examples/s  "
                      f"test acc {r['test_acc']:.4f}  peak mem {r['peak_mem'] / 2**20:7.0f} MiB")
        if theirs is not None:
            ratio = theirs["wall_s"] / ours["wall_s"]
            goal = GOALS.get((kind, key))
            verdict = f" (goal {goal}x: {'met' if ratio >= goal else 'NOT met'})" if goal else ""
            print(f"  ratio   {ratio:.2f}x faster (wall clock){verdict}")
        for e in ours["epochs"]:
            print(f"  cnnlib epoch {e['epoch']}: data {e['data_s']:.2f} s, step {e['step_s']:.2f} s, "
                  f"evaluation {e['eval_s']:.2f} s")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    path = out / f"{kind}-{date.today()}.json"
    path.write_text(json.dumps(dict(device=name, torch=torch.__version__, date=str(date.today()),
                                    results=results), indent=1))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
