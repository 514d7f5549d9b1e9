"""Race and Verify seeds as trials any worker takes (search/drill/seedwork.py), on one machine's journal."""

import json
import socket
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from budgetnas.search.drill import seedwork
from budgetnas.search.engine.seeds import DataSpec, SeedRun
from budgetnas.search.engine.train import Engine
from budgetnas.search.study.storage import make_storage
from tests.conftest import TINY


def drill_study(tmp_path):
    return optuna.create_study(study_name="d", storage=make_storage(f"journal:{tmp_path}/d.journal"))


def runs(data_root, seeds):
    arch = json.dumps(TINY.with_recipe(epochs=1).to_dict())
    return {f"race/trial0/seed{s}": SeedRun(DataSpec("mnist", str(data_root), val_size=200), s, arch=arch, tag=0)
            for s in seeds}


def test_a_posted_run_is_posted_once_and_claimed_by_one_taker(tmp_path, data_root):
    study = seedwork.seeds_study(drill_study(tmp_path))
    seedwork.post(study, runs(data_root, [0, 1, 2]))
    seedwork.post(study, runs(data_root, [0, 1, 2]))  # a resumed leader posts its round again
    assert len(study.trials) == 3
    first, second = seedwork.claim(study, 2), seedwork.claim(study, 2)
    assert len(first) == 2 and len(second) == 1
    assert {t.number for t in first}.isdisjoint(t.number for t in second)
    assert seedwork.claim(study, 2) == []


def test_the_leader_trains_its_round_and_retrains_only_what_a_dead_taker_held(tmp_path, data_root):
    drill = drill_study(tmp_path)
    study = seedwork.seeds_study(drill)
    todo = runs(data_root, [0, 1])
    seedwork.post(study, todo)
    held = seedwork.claim(study, 1)[0]  # taken by a process that then died: its pid is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    study._storage.set_trial_user_attr(held._trial_id, "worker", f"{socket.gethostname()}:{dead}")
    got = dict(seedwork.train(drill, todo, Engine(device="cpu", precision="fp32", compile="off"), jobs=1))
    assert sorted(got) == sorted(todo) and all(len(r["history"]) == 1 for r in got.values())
    states = [(t.user_attrs["key"], t.state) for t in study.trials]
    assert sorted(states) == sorted([(held.user_attrs["key"], TrialState.FAIL)]
                                    + [(k, TrialState.COMPLETE) for k in todo])  # each key completed once
    again = dict(seedwork.train(drill, todo, Engine(device="cpu"), jobs=1))  # a resumed leader: nothing retrained
    assert again == got and len(study.trials) == 3
