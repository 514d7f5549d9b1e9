#!/usr/bin/env bash
# One drill on a lent CUDA machine, in one run, its results packed into $OUT.
# Usage, from the repo root on that machine (budgetnas and optuna importable by python3):
#   OUT=DIR BUDGETNAS_DATA=DIR bash docs/gpu-drill.sh NAME BUDGET HOURS WORKERS
# The drill plans its stages inside HOURS. A hard stop at DEADLINE seconds (a kill -9) loses
# nothing it stored: studies/NAME/ comes back as NAME.tgz with its journal, and the same
# `budgetnas drill` command, run anywhere on that folder, resumes it.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for results}
NAME=${1:?name}; BUDGET=${2:?budget}; HOURS=${3:?hours}; WORKERS=${4:?workers}
DEADLINE=${DEADLINE:-520}
export PYTHONUNBUFFERED=1
{
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, 'cuda', torch.cuda.is_available())"
echo "cpus $(nproc)"
echo "== drill"
timeout -s KILL "$DEADLINE" python3 -m budgetnas.search.cli drill --name "$NAME" --budget "$BUDGET" --bar 99.4 \
    --hours "$HOURS" --workers "$WORKERS" --device cuda
echo "drill rc=$? after ${SECONDS}s"
python3 -m budgetnas.search.cli status --storage "journal:studies/$NAME/drill.journal" --study "$NAME"
} 2>&1 | tee "$OUT/run.log"
tar czf "$OUT/$NAME.tgz" "studies/$NAME"
