"""Write this study's warm starts: mnist-7k's trials 21 and 125 with their second stage made
separable and its widths (1x1 transition included) multiplied by 2 and 2.5, rounded to even.

    python studies/mnist-sep/make_warm.py
"""

import warnings
from pathlib import Path

import optuna

from budgetnas.space import Arch, SpaceConfig, count_params, params_of, sample_arch

HERE = Path(__file__).parent
ANY = SpaceConfig(separable=(True, False), channels=(4, 64))  # wide enough for every scaled width

warnings.simplefilter("ignore")  # FixedTrial warns about values outside a narrower space
for trial in (21, 125):
    params = params_of(Arch.from_json((HERE.parent / f"mnist-7k-ema/warm-mnist-7k-trial{trial}.json").read_text()))
    for scale in (2, 2.5):
        scaled = {k: int(round(v * scale / 2) * 2) if k == "s1_t" or (k.startswith("s1_c") and k != "s1_convs") else v
                  for k, v in params.items()}
        arch = sample_arch(optuna.trial.FixedTrial({**scaled, "s1_separable": True}), ANY)
        path = HERE / f"warm-mnist-7k-trial{trial}-sep-x{scale}.json"
        path.write_text(arch.to_json())
        print(f"{path}: {count_params(arch):,} params")
