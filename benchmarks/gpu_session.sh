#!/usr/bin/env bash
# Every GPU measurement docs/performance.md asks for, in one call that ends within ~9 minutes on an
# H100/H200 (the budget of a lent device session is 15 minutes in all; each step has its own timeout).
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine; results land in $OUT (or /tmp/vitssl-gpu)
#   TINY=1 PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh   # the same sequence in seconds on a CPU (tested)
#
# The GPU image has PyTorch, torchvision, timm and the rest, but not omegaconf. Before the call,
# in the repository root here (pure-Python wheels; .whl/ is kept out of git):
#   echo /.whl/ >> .git/info/exclude && mkdir -p .whl
#   pip download --no-deps --only-binary=:all: -d .whl omegaconf==2.3.0
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# then run this script with `.whl` carried; it installs them into /tmp/site.
set -u -o pipefail
OUT=${OUT:-/tmp/vitssl-gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
failed=0
if [ -d .whl ] && ! "$PYTHON" -c "import omegaconf" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() {  # step NAME TIMEOUT_S ARGS...: one benchmark run, its table in $OUT/NAME.log and JSON in $OUT/NAME.json
  local name=$1 limit=$2
  shift 2
  echo "== $name: vitssl benchmark step $* ${TINY:+(tiny)}"
  if [ -n "${TINY:-}" ]; then
    set -- "$@" --device cpu --tiny --steps 1 --warmup 0 --images 4
  fi
  timeout "$limit" "$PYTHON" -m vitssl benchmark step "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log" || failed=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; } 2>&1 | tee "$OUT/machine.log"
"$PYTHON" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" | tee -a "$OUT/machine.log"
# 1. eager bf16: every method, synthetic input and JPEG decoded + augmented on the device
step eager 170 --input synthetic,jpeg --aug gpu
# 2. torch.compile of every network, synthetic input
step compiled 240 --input synthetic --compile
# 3. the originals' input pipeline: 15 CPU workers decoding JPEGs with PIL multi-crop
step cpu_input 120 --methods dino,mae-lite --input jpeg --aug cpu --workers "${WORKERS:-15}"
echo "results in $OUT"
exit $failed
