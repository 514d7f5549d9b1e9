"""`budgetnas parity`: verify results paired seed by seed, by the rule in search/engine/parity.py."""

import json

import pytest

from budgetnas.search.engine.parity import MEAN_POINTS, compare


def record(last3s, bar=99.4, params=7000, engine=None):
    runs = [{"seed": s, "params": params, "last3_test": list(l3), "min_last3": min(l3)} for s, l3 in enumerate(last3s)]
    return {"verdict": {"target": bar}, "runs": runs, "engine": engine or {"precision": "fp32"}}


REF = record([(99.42, 99.45, 99.44), (99.38, 99.41, 99.40), (99.50, 99.52, 99.51)])  # 2 of 3 pass


def shifted(rec, by):
    return record([[a + by for a in r["last3_test"]] for r in rec["runs"]])


def test_parity_is_the_paired_mean_and_the_pass_count():
    same = compare(REF, shifted(REF, -0.04))  # all within: 0.04 lower, seed 0 still passes, seed 1 fails as before
    assert same["parity"] and same["mean_diff"] == pytest.approx(-0.04) and same["passes"] == [2, 1]
    lower = compare(REF, shifted(REF, -(MEAN_POINTS + 0.01)))
    assert not lower["parity"]  # the mean moved more than the rule allows
    two_fewer = compare(REF, record([(99.39, 99.45, 99.50), (99.38, 99.41, 99.40), (99.48, 99.52, 99.39)]))
    assert abs(two_fewer["mean_diff"]) <= MEAN_POINTS and two_fewer["passes"] == [2, 0] and not two_fewer["parity"]


def test_parity_pairs_only_the_seeds_both_trained():
    fewer = record([r["last3_test"] for r in REF["runs"][:2]])
    assert compare(REF, fewer)["seeds"] == [0, 1]


@pytest.mark.parametrize("other, message", [
    (record([(99.4, 99.4, 99.4)], params=6000), "different models"),
    (record([(99.4, 99.4, 99.4)], bar=99.0), "one bar"),
])
def test_parity_refuses_results_it_cannot_pair(other, message, cli, tmp_path):
    (tmp_path / "ref.json").write_text(json.dumps(REF))
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = cli("parity", "ref.json", "other.json", cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_parity_command_prints_a_table_writes_json_and_fails_without_parity(cli, tmp_path):
    (tmp_path / "ref.json").write_text(json.dumps(REF))
    (tmp_path / "near.json").write_text(json.dumps(shifted(REF, 0.01)))
    (tmp_path / "far.json").write_text(json.dumps(shifted(REF, 0.2)))
    out = cli("parity", "ref.json", "near.json", "--json", "p.json", cwd=tmp_path)
    assert out.returncode == 0 and "| 1 | 99.38 99.41 99.40 | 99.39 99.42 99.41 | +0.010 |" in out.stdout
    assert json.loads((tmp_path / "p.json").read_text())["comparisons"]["near.json"]["parity"] is True
    out = cli("parity", "ref.json", "near.json", "far.json", cwd=tmp_path)
    assert out.returncode == 1 and "NO PARITY" in out.stdout
    (tmp_path / "bad.json").write_text('{"runs": [{"seed": 0}]}')
    out = cli("parity", "ref.json", "bad.json", cwd=tmp_path)
    assert out.returncode == 2 and "not a verify result" in out.stderr
