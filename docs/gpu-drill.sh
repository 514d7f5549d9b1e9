#!/usr/bin/env bash
# One drill on a lent CUDA machine, in one run, its results packed into $OUT.
# Usage, from the repo root on that machine (budgetnas and optuna importable by python3):
#   OUT=DIR BUDGETNAS_DATA=DIR bash docs/gpu-drill.sh NAME BUDGET HOURS WORKERS
# The drill plans its stages inside HOURS. A hard stop at DEADLINE seconds (a kill -9) loses
# nothing it stored: studies/NAME/ comes back as NAME.tgz with its journal, and the same
# `budgetnas drill` command, run anywhere on that folder, resumes it.
# As run on 2026-12-04 (studies/mnist-drill-7k-gpu): the machine's python3 lacks optuna, so its
# cp312 wheels and budgetnas's (`pip wheel --no-deps .`) travel in .whl/ (optuna, alembic,
# colorlog, Mako, SQLAlchemy, optuna-dashboard, bottle; `pip download --no-deps --python-version
# 3.12 --platform manylinux_2_17_x86_64 ...`), MNIST's raw files in gpu-data/MNIST/raw/, both
# listed in .git/info/exclude and carried; the command installs them first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   OUT=$OUT BUDGETNAS_DATA=gpu-data DEADLINE=540 bash docs/gpu-drill.sh mnist-drill-7k-gpu 7000 0.14 12
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
