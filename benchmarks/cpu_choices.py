"""The CPU step's two choices, timed at the book's own `cpu` schedules: channels_last and torch.compile.

    python benchmarks/cpu_choices.py                       # LeNet, the DLfS net, quarter-width VGG
    python benchmarks/cpu_choices.py --models lenet --variants nchw,nhwc

Each (model, variant) trains in a fresh process, one after another, from the same seed, so no run
inherits another's warm caches except where that is the point: `compile-cold` compiles with an
empty inductor cache, `compile-warm` runs again with the cache the cold run filled (what a student
who reruns a page gets). The wall time is the whole `train_fresh` call, compilation included.
Printed per run: wall seconds, training examples/s, the final test accuracy; results to --out.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# Per model, as its page trains it under `cpu`: the loader and its keywords, builder, lr and epochs.
SCHEDULES = {
    "lenet": dict(loader="fashion_mnist", data=dict(batch_size=256, normalize=True),         # 05/01
                  build="lenet5", kwargs={}, lr=1e-3, epochs=6),
    "dlfs": dict(loader="mnist", data=dict(batch_size=100), build="deep_convnet", kwargs={},  # 05/05
                 lr=1e-3, epochs=10),
    "vgg": dict(loader="fashion_mnist", data=dict(batch_size=128, train_size=24_000, resize=32,  # 05/03
                                                 normalize=True),
                build="vgg11_bn", kwargs=dict(num_classes=10, in_channels=1, small_input=True, width=0.25),
                lr=1e-3, epochs=2),
}
VARIANTS = {"nchw": dict(channels_last=False), "nhwc": dict(channels_last=True),
            "compile-cold": dict(channels_last=True, compile=True),
            "compile-warm": dict(channels_last=True, compile=True)}


def one_run(model, variant):
    """Train one (model, variant) in this process and print its result as one JSON line."""
    import cnnlib  # sets the OpenMP wait policy before torch starts
    from cnnlib import data, models
    s = SCHEDULES[model]
    start = time.perf_counter()
    train, test = getattr(data, s["loader"])(**s["data"])
    build = getattr(models, s["build"])
    _, history = cnnlib.train_fresh(lambda: build(**s["kwargs"]), train, test, epochs=s["epochs"], seed=0,
                                    lr=s["lr"], reseed_loader=True, **VARIANTS[variant])
    wall = time.perf_counter() - start
    print(json.dumps(dict(model=model, variant=variant, wall_s=round(wall, 1),
                          epoch_s=[round(x, 1) for x in history["seconds"]],
                          examples_per_s=round(train.num_examples * s["epochs"] / wall),
                          val_acc=round(history.last["val_acc"], 4))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(SCHEDULES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"cpu-choices-{date.today()}.json"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_run(*args.one)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for model in args.models.split(","):
            for variant in args.variants.split(","):
                if variant == "compile-cold":    # an empty cache for each model's first compile
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache) / model)
                out = subprocess.run([sys.executable, __file__, "--one", model, variant], check=True,
                                     stdout=subprocess.PIPE, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{model:6} {variant:13} {r['wall_s']:7.1f} s  {r['examples_per_s']:6d} ex/s  "
                      f"acc {r['val_acc']:.4f}  epochs {r['epoch_s']}", flush=True)
    import torch
    Path(args.out).write_text(json.dumps(dict(date=str(date.today()), torch=torch.__version__,
                                              machine=platform.processor() or platform.machine(),
                                              threads=torch.get_num_threads(), runs=rows), indent=1) + "\n")
    print("written", args.out)


if __name__ == "__main__":
    main()
