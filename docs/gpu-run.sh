#!/usr/bin/env bash
# Everything this project measured on a lent CUDA machine, in one run. Each step is time-boxed
# against one deadline, so that a slow or failing step leaves the others' results:
#   1. the CUDA tests (tests/test_cuda.py: no host read-back per batch, bench on CUDA);
#   2. exp4 trained 15 epochs on CUDA, seeds 0-2: seconds per epoch and test accuracy there;
#   3. `budgetnas bench --device cuda`: the notebook loop and each engine setting on the GPU;
#   4. the study studies/mnist-sep-gpu with what time is left (12 workers on the one GPU).
# Usage, from the repo root on that machine: OUT=DIR BUDGETNAS_DATA=DIR bash docs/gpu-run.sh
set -uo pipefail
OUT=${OUT:?set OUT to the folder for results}
DEADLINE=${DEADLINE:-570}  # seconds from the start by which everything has ended
export PYTHONUNBUFFERED=1
left() { local s=$((DEADLINE - SECONDS)); echo $((s < $1 ? s : $1)); }  # min(cap, time left)
BN="python3 -m search.cli"
step() { echo "== ${SECONDS}s $*"; }
{
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__)"
echo "cpus $(nproc)"
step tests
timeout "$(left 90)" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -5
step verify exp4 on CUDA
timeout "$(left 100)" $BN verify exp4 --seeds 3 --jobs 3 --device cuda \
    --json "$OUT/verify-exp4-cuda.json" > "$OUT/verify-exp4-cuda.log" 2>&1
echo "verify rc=$?"; tail -2 "$OUT/verify-exp4-cuda.log"
step bench on CUDA
# Torch's threads at 4, not all 16: at 16 (and 10,000 images) this step did not end inside
# its box on the H100 (2026-11-26); why was not looked into.
timeout "$(left 120)" $BN bench --arch exp4 --images 5000 --threads 4 --repeats 1 --device cuda \
    --json "$OUT/bench-cuda.json" 2>&1 | tail -9
step study
stop=$(left 400); trials_until=$((stop - 100))  # start no trial in the last 100 s: let running ones end
timeout -s INT "$stop" $BN search --config studies/mnist-sep-gpu/study.toml --timeout "$trials_until" \
    --workers 12 --device cuda --precision fp32 --compile off > "$OUT/search.log" 2>&1
echo "search rc=$? (new trials for ${trials_until}s, hard stop ${stop}s)"; tail -12 "$OUT/search.log"
cp studies/mnist-sep-gpu.journal "$OUT/"
step done
} 2>&1 | tee "$OUT/run.log"
