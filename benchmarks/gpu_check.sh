#!/usr/bin/env bash
# What only a GPU can show about cnnlib, in about 10 minutes, most valuable first; run it whenever a
# GPU is at hand (benchmarks/README.md, "The GPU check"):
#
#     bash benchmarks/gpu_check.sh              # on a GPU (PYTHON=.venv/bin/python to choose python)
#     bash benchmarks/gpu_check.sh --rehearse   # on the CPU, every fit capped at 2 steps an epoch
#
# 1. (about 3 minutes) the CUDA tests, resume included (tests/test_train.py -k "cuda or graph or
#    resume", tests/test_checkpoint.py); fit's CUDA-graph self-check on LeNet-5, ResNet-18 and the DLfS
#    net, with and without amp, printing the autocast dtype and whether a graph was used (bf16 and a
#    graph at compute capability 8.0+, fp16 with a GradScaler and eager below); the MLP page and the
#    data-parallel page at the smoke budget on one GPU.
# 2. (about 2 minutes) benchmarks/bench.py against d2l's train_ch6 (default LeNet: the goal is 10x);
#    its JSON goes to benchmarks/results/, where benchmarks/README.md's table is filled from.
# 3. (a window of $GPU_CHECK_WINDOW seconds each, default 120) the full budget of the pages whose
#    targets need a GPU: the DLfS net >= 99.38% on MNIST, ResNet-18 >= 95% on Fashion-MNIST (the
#    comparison page with only ResNet-18 kept), YOLO mAP@0.5 >= 0.9. At the window's end `timeout`
#    sends SIGINT: fit stops cleanly (saving its checkpoint if it has one) and what each epoch reached
#    is in full/<page>.json. A page that completes adds its time to chapters/90_appendix/runtimes.csv.
#
# Every stage writes its logs and results under one folder: $GPU_CHECK_RESULTS, else $OUT/gpu_check
# when the course's device tool sets OUT (so they come back), else benchmarks/results/gpu_check-<time>.
# --rehearse runs the same script on the CPU with CNNLIB_MAX_STEPS=2 (2 steps an epoch, 2 epochs),
# skipping what needs CUDA with a one-line reason, so a GPU's first minute is not spent on a typo.
# Environment: PYTHON, CNNLIB_DATA (default ./data; .gz files are unpacked as tools/gpu_rerun.sh does),
# BENCH_MODELS (default lenet), GPU_CHECK_WINDOW; wheels in .whl/ are installed first (a bare image).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REHEARSE=0
if [[ ${1:-} == --rehearse ]]; then REHEARSE=1; shift; fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--rehearse]" >&2; exit 2; }

RESULTS=${GPU_CHECK_RESULTS:-${OUT:+$OUT/gpu_check}}
RESULTS=${RESULTS:-benchmarks/results/gpu_check-$(date +%Y-%m-%d-%H%M)}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
WINDOW=${GPU_CHECK_WINDOW:-120}
TABLE=chapters/90_appendix/runtimes.csv

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export CNNLIB_DOWNLOAD=0 CNNLIB_DATA=${CNNLIB_DATA:-$PWD/data}
for gz in "$CNNLIB_DATA"/*/raw/*.gz; do           # torchvision reads the unpacked files only
  [[ -e $gz && ! -s ${gz%.gz} ]] && gunzip -c "$gz" >"${gz%.gz}"
done

if (( REHEARSE )); then
  export CNNLIB_MAX_STEPS=2 CNNLIB_DEVICE=cpu
  echo "gpu_check: REHEARSAL on the CPU, CNNLIB_MAX_STEPS=2; results in $RESULTS"
else
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device (on the CPU: --rehearse)')" || exit 1
  "$PY" -c "import torch; print('gpu_check on', torch.cuda.get_device_name(), 'capability', torch.cuda.get_device_capability(), 'torch', torch.__version__)"
  echo "results in $RESULTS"
fi

summary=()
# step NAME LIMIT_S COMMAND...: runs it with its output in $RESULTS/NAME.log, and notes the outcome
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout -s INT -k 30 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
  local rc=${PIPESTATUS[0]}
  case $rc in
    0) summary+=("passed   $name") ;;
    124) if [[ $name == 3-* ]]; then summary+=("stopped  $name at the window's end ($limit s)")
         else summary+=("FAILED   $name (still running after $limit s)"); fi ;;
    *) summary+=("FAILED   $name (exit $rc)") ;;
  esac
}
skip() { echo "== $1: skipped, $2"; summary+=("skipped  $1: $2"); }

echo "== stage 1/3: what only CUDA runs"
if (( REHEARSE )); then
  skip 1a-cuda-tests "the CUDA tests and the CUDA resume need a GPU (on the CPU they are unit tests)"
  skip 1b-graph-self-check "CUDA graphs and CUDA autocast need a GPU"
else
  step 1a-cuda-tests 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_train.py tests/test_checkpoint.py \
    -k "cuda or graph or resume or checkpoint"
  step 1b-graph-self-check 300 "$PY" - <<'PYEOF'
import copy, torch, torchvision
from cnnlib import cuda_graph as graphs, data, fit, models, train

verdicts = []
real_check = graphs.disagrees    # the self-check fit's graph step runs (cnnlib/cuda_graph.py)
def recording(*args, **kwargs):  # fit's own self-check, with its verdict kept
    verdicts.append(real_check(*args, **kwargs))
    return verdicts[-1]
graphs.disagrees = recording

device = torch.device("cuda")
major, minor = torch.cuda.get_device_capability(device)
print(f"{torch.cuda.get_device_name(device)}: compute capability {major}.{minor}; the design: "
      + ("bf16 autocast and a CUDA graph" if major >= 8 else "fp16 autocast with a GradScaler, eager (no graph)"))

def batches(shape, n=640, batch=64):
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
    return data.TensorLoader(images, torch.randint(0, 10, (n,)), batch, shuffle=True, drop_last=True, device="cuda")

cases = {"lenet5": (models.lenet5, (1, 28, 28)),
         "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
         "dlfs": (models.deep_convnet, (1, 28, 28))}
failed = []
for name, (build, shape) in cases.items():
    for amp in (True, False):
        dtype = train._autocast(device, amp)
        if amp and dtype == torch.bfloat16 and major < 8:
            failed.append(f"{name} amp=True: bf16 at compute capability {major}.{minor} (cuDNN runs no bf16 "
                          "convolution there: fp16 with a GradScaler is the design)")
        expect_graph = dtype != torch.float16   # a GradScaler's step cannot be captured
        results = []
        for graph in (False, True):
            torch.manual_seed(0)
            model = build()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            verdicts.clear()
            history = fit(model, batches(shape), epochs=2, optimizer=opt, cuda_graph=graph, amp=amp,
                          progress=False, verbose=False, device="cuda")
            results.append([p.detach().float() for p in model.parameters()])
        used = "graph" if verdicts == [None] else "eager" if not verdicts else f"graph refused {verdicts}"
        worst = max(((g - e).norm() / (e.norm() + 1e-12)).item() for e, g in zip(*results))
        # bf16 runs drift apart over 20 steps by rounding alone; fp32 must stay close (dropout draws its
        # masks in an order torch does not promise: for the DLfS net the difference is reported only)
        dropout = any(isinstance(m, torch.nn.Dropout) for m in model.modules())
        close = dropout or worst < (5e-2 if amp else 1e-3)
        print(f"{name:9} amp={amp!s:5} autocast {str(dtype).replace('torch.', ''):8} {used:6} "
              f"{history.last['examples_per_s']:9,.0f} examples/s  graph vs eager after 2 epochs: "
              f"largest relative difference {worst:.2e}")
        if used != ("graph" if expect_graph else "eager") or not close:
            failed.append(f"{name} amp={amp} ({used}, expected {'graph' if expect_graph else 'eager'})")
    # a replay that does nothing must be caught
    torch.manual_seed(0)
    model = build().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    twin, twin_opt = copy.deepcopy((model, opt))
    x, y = next(iter(batches(shape)))
    def eager(m, o):
        o.zero_grad(); loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); o.step()
        return {"loss": loss.detach()}
    no_op = lambda: {"loss": torch.nn.functional.cross_entropy(model(x), y).detach()}
    if real_check(no_op, lambda: eager(twin, twin_opt), model, twin) is None:
        failed.append(f"{name}: a no-op replay was not caught")
if failed:
    raise SystemExit("gpu_check: FAILED: " + "; ".join(failed))
print("self-check and autocast choice: all as designed")
PYEOF
fi
# the pages a GPU reader meets first, at the smoke budget (seconds): a model on the CPU given a batch
# that lives on cuda:0, and torchrun with the training on the CPU on a machine that has one GPU
step 1c-mlp-page 300 env CNNLIB_BUDGET=smoke "$PY" benchmarks/run_page.py chapters/01_mlp/04_fashion_mnist.ipynb \
  --results "$RESULTS/smoke"
step 1d-data-parallel-page 300 env CNNLIB_BUDGET=smoke "$PY" benchmarks/run_page.py \
  chapters/90_appendix/01_data_parallel.ipynb --results "$RESULTS/smoke"

echo "== stage 2/3: bench.py against d2l"
bench=(--models "${BENCH_MODELS:-lenet}")
if ! "$PY" -c "import d2l" 2>/dev/null; then
  echo "d2l is not installed (tools/gpu_wheels.txt lists its wheels): timing cnnlib alone"
  bench+=(--without-d2l)
fi
if (( REHEARSE )); then
  step 2-bench 300 "$PY" benchmarks/bench.py "${bench[@]}" --epochs 1 --without-d2l --out "$RESULTS/bench"
else
  step 2-bench 400 "$PY" benchmarks/bench.py "${bench[@]}" --out benchmarks/results
  cp benchmarks/results/cuda-"$(date +%Y-%m-%d)".json "$RESULTS/" 2>/dev/null
fi

echo "== stage 3/3: the full budget where a target needs it, $WINDOW s each"
if (( REHEARSE )) && ! grep -q CNNLIB_MAX_STEPS cnnlib/*.py; then
  skip 3-full "this cnnlib does not read CNNLIB_MAX_STEPS, so the full budget would run uncapped on the CPU"
else
  table=(--table "$TABLE")
  (( REHEARSE )) && table=()   # capped runs time nothing
  full() { local page=$1; shift
    step "3-full-$(basename "$page" .ipynb)" "$WINDOW" env CNNLIB_BUDGET=full "$PY" benchmarks/run_page.py "$page" \
      --results "$RESULTS/full" "${table[@]}" "$@"; }
  full chapters/05_modern_cnns/05_dlfs_deep_cnn.ipynb
  full chapters/05_modern_cnns/09_comparison.ipynb --until 10 \
    --inject '4:contenders = [c for c in contenders if c[0] == "ResNet-18"]'   # cell 10 compares all eight
  full chapters/06_detection_segmentation/03_yolo.ipynb
  cp "$TABLE" "$RESULTS/runtimes.csv"
fi

echo "== gpu_check summary (full/<page>.json: what each stage-3 page reached, epoch by epoch)"
printf '%s\n' "${summary[@]}" | tee "$RESULTS/summary.txt"
! printf '%s\n' "${summary[@]}" | grep -q '^FAILED'
