#!/usr/bin/env bash
# The README's GPU figures in one call: `l2bn bench` on the paper profile at each precision, one
# JSON report each under $OUT (the device tool's folder that comes back; bench-gpu/ elsewhere).
#
# On a lent GPU machine (device tool), whose python3 has PyTorch, pandas, tqdm and filelock, all
# the bench needs:   run(command="bash bench/gpu.sh", timeout_s=480)
# With this repository's venv:   make gpubench
# PROFILE, MS, STEPS, REPEATS and DEVICE override the defaults (the test runs it on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-gpu}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
for precision in fp32 tf32 bf16; do
  "$python" -m l2bn bench --profile "${PROFILE:-paper}" --device "${DEVICE:-cuda}" --ms "${MS:-1,7,49}" \
    --steps "${STEPS:-5}" --repeats "${REPEATS:-3}" --precision "$precision" \
    --json "$out/bench-${PROFILE:-paper}-$precision.json"
done
