"""Write this study's widened warm starts: mnist-sep's trial 57 (exported to
warm-mnist-sep-trial57.json by `budgetnas export --config studies/mnist-sep/study.toml
--trial 57 -o ...`) with its last conv widened from 40 (mnist-sep's edge) to 48, 56 and 64.

    python studies/mnist-sep-wide/make_warm.py
"""

import warnings
from pathlib import Path

import optuna

from budgetnas.space import Arch, SpaceConfig, count_params, params_of, sample_arch

HERE = Path(__file__).parent
ANY = SpaceConfig(separable=(True, False), channels=(4, 64), ema=(0.0, 0.998))  # wide enough for every width here

warnings.simplefilter("ignore")  # FixedTrial warns about values outside a narrower space
params = params_of(Arch.from_json((HERE / "warm-mnist-sep-trial57.json").read_text()))
last = f"s1_c{params['s1_convs'] - 1}"
for width in (48, 56, 64):
    arch = sample_arch(optuna.trial.FixedTrial({**params, last: width}), ANY)
    path = HERE / f"warm-mnist-sep-trial57-last{width}.json"
    path.write_text(arch.to_json())
    print(f"{path}: {count_params(arch):,} params")
