#!/usr/bin/env bash
# Re-run notebooks under the full budget on a GPU, chapter by chapter, store their outputs and
# record their runtimes (chapters/90_appendix/runtimes.csv), so that whenever a GPU is at hand
# the book's stored outputs can be the ones a Colab reader gets.
#
#   tools/gpu_rerun.sh                                    every chapter, one after another
#   tools/gpu_rerun.sh 'chapters/05_modern_cnns/*.ipynb'  one chapter (quote the glob)
#   tools/gpu_rerun.sh --fetch-wheels                     on a machine WITH a network: put the
#                                                         runner's missing packages in .whl/
#
# Each chapter runs under `timeout $CHAPTER_TIMEOUT` (default 600 s: the full budget promises
# each notebook under ~10 minutes on a T4, so a chapter that needs more is split by glob).
# A notebook whose cell fails is left as it was; the others are stored (tools/execute_notebooks.py).
#
# Environment:
#   PYTHON           the interpreter that has torch with CUDA (default: python3)
#   CNNLIB_DATA      data root in torchvision's layout (default: ./data). Missing unpacked files are
#                    made from the .gz files beside them, so carrying the gzipped sets is enough:
#                        mkdir -p data && cp -r ../shared/data/MNIST ../shared/data/FashionMNIST data/
#                    (about 41 MB; `data/` is git-ignored). Nothing is downloaded: CNNLIB_DOWNLOAD=0.
#   .whl/            wheels installed first, offline, into /tmp/site when present (a bare image
#                    lacks nbclient, nbformat, ipykernel, torchinfo, scikit-learn and pycocotools;
#                    tools/gpu_wheels.txt lists them, and d2l for benchmarks/bench.py).
#   OUT              when set (the course's device tool sets it), the stored notebooks, the runtimes
#                    table and the log are packed into $OUT/gpu_outputs.tar: unpack it at the
#                    repository's root (tar -xf .../gpu_outputs.tar) and review the diff.
#
# With the device tool (10 minutes per call): one call per chapter, carrying data and .whl, e.g.
#   run(command="tools/gpu_rerun.sh 'chapters/05_modern_cnns/0[1-3]*.ipynb'", carry=["data", ".whl"])
# and unpack each call's tarball before the next (the next call starts from this working tree).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ ${1:-} == --fetch-wheels ]]; then
  mkdir -p .whl
  grep -v '^#' tools/gpu_wheels.txt | xargs "$PYTHON" -m pip download --no-deps --only-binary=:all: \
    --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
  exit
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # this checkout's cnnlib, in the kernels too
export CNNLIB_BUDGET=full CNNLIB_DOWNLOAD=0 CNNLIB_DATA=${CNNLIB_DATA:-$PWD/data} PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY' || exit 1
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "torchmetrics", "torchinfo", "matplotlib", "pandas", "tqdm",
                       "sklearn", "pycocotools", "nbformat", "nbclient", "ipykernel")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing packages: {', '.join(missing)}; carry them as wheels in .whl/ "
             "(tools/gpu_rerun.sh --fetch-wheels, on a machine with a network)")
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script is for a GPU (on a CPU use tools/execute_notebooks.py)")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
PY

for gz in "$CNNLIB_DATA"/*/raw/*.gz; do           # torchvision reads the unpacked files only
  [[ -e $gz && ! -s ${gz%.gz} ]] && gunzip -c "$gz" >"${gz%.gz}"
done

shopt -s nullglob
notebooks=()
for pattern in "${@:-chapters/*/*.ipynb}"; do
  for p in $pattern; do notebooks+=("$p"); done
done
[[ ${#notebooks[@]} -gt 0 ]] || { echo "no notebooks match: $*"; exit 1; }
chapters=$(printf '%s\n' "${notebooks[@]}" | xargs -n1 dirname | sort -u)

log=${OUT:-/tmp}/gpu_rerun.log
status=0
for chapter in $chapters; do
  here=()
  for p in "${notebooks[@]}"; do [[ $(dirname "$p") == "$chapter" ]] && here+=("$p"); done
  echo "== $chapter: ${#here[@]} notebooks, full budget" | tee -a "$log"
  timeout "${CHAPTER_TIMEOUT:-600}" "$PYTHON" tools/execute_notebooks.py --store "${here[@]}" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  [[ $rc == 124 ]] && echo "== $chapter: stopped after ${CHAPTER_TIMEOUT:-600} s" | tee -a "$log"
  [[ $rc != 0 ]] && status=1
done

# Chapter 5's pages' results, as stored now, beside the cpu ones: the table of all models reads
# them (its "own page, full" column) when it is stored after them.
"$PYTHON" tools/collect_results.py 2>&1 | tee -a "$log" || status=1

if [[ -n ${OUT:-} ]]; then
  tar -cf "$OUT/gpu_outputs.tar" "${notebooks[@]}" chapters/90_appendix/runtimes.csv \
    chapters/05_modern_cnns/results.csv
  echo "outputs packed in \$OUT/gpu_outputs.tar"
fi
exit $status
