"""Kill -9 at random points (issue #38, item 4: faults as figures).

`budgetnas search` (two workers, a journal) and `budgetnas drill` are killed with SIGKILL, their
whole process group at once (the workers too), after a time drawn at random (`random.Random`,
seeded) between 0.5 s and the run's typical duration (a search's; for a drill, what its clock has
left, so that later kills reach its later stages); after each kill the storage is read back and
the same command is started again; after the kills, it runs to its end. Then what a kill could
break is counted:

  lost        a trial COMPLETE after a kill that is missing, or not the same (state, params,
              value, learning curve), at the end
  duplicated  two COMPLETE trials of one trial (a trial and its retry, or two retries), or a last,
              unkilled, search that ran more trials than it asked for
  stuck       a trial still RUNNING once the last command has ended
  changed     a drill record stored before a kill that is not the same at the end: the stages
              done (a prefix), Narrow's space, the race's entrants and every score, drop and end
              it had, the pick, each Verify seed and the verdict; or a retry with a param other
              than its trial's
  failed      a run that ended on its own with an error or a traceback, a storage that could not
              be read after a kill, a drill that did not end with a verdict, or a last search
              that ran fewer trials than it asked for

A drill is time-boxed (its stages end on its clock), so its pick is not compared with an unkilled
drill's: which trials it trains depends on the timing. What must hold is that a record, once
stored, is never rewritten. `test_kill_anywhere_figures` (slow) prints the counts as one JSON
line; docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from budgetnas.search.study.storage import make_storage
from tests.conftest import write_idx_dataset

ENTRY = "from budgetnas.search.cli import main; main()"
SEARCH_TRIALS = 6
SEARCH = ["search", "--study", "s", "--storage", "journal:studies/s.journal", "--budget", "3000", "--trials",
          str(SEARCH_TRIALS), "--epochs", "1", "--val-size", "200", "--no-warm-start", "--workers", "2"]
SEARCH_S = 12.0  # a search run of these settings, two workers on two loaded cores (about 12 s measured)
DRILL_HOURS = 0.01  # 36 s on the drill's clock; a refusal as too short names the least, which is then used
STAGES = ["explore", "narrow", "race", "verify"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def drill_args(hours: float) -> list[str]:
    return ["drill", "--name", "d", "--budget", "3000", "--hours", f"{hours:g}", "--epochs", "1", "--val-size", "200",
            "--seeds", "1", "--workers", "1", "--threads", "1"]


def drill_s(hours: float, snap: dict) -> float:
    """A drill run's typical duration: what its clock has left of its hours (as last stored), and
    10 s of start-up that the clock does not count."""
    return max(0.0, hours * 3600 - snap.get("drill", {}).get("spent", 0.0)) + 10.0


@dataclass
class Tally:
    command: str
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    changed: int = 0
    failed: int = 0
    runs: int = 0  # commands started, the last unkilled runs included
    ended_first: int = 0  # runs that ended before their kill time (not counted as kills)
    interrupted: int = 0  # trials RUNNING at a kill: the trainings under way, failed and retried on resume
    torn: int = 0  # journals with a torn last line at a kill (moved aside on the next open)
    redrawn: int = 0  # retries of a trial killed while it drew its params: the rest drawn again
    episodes: int = 0  # fresh studies or drills: a drill ends, and the next kills go to a new one
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def bad(self, what: str, n: int, note: str) -> None:
        if n:
            setattr(self, what, getattr(self, what) + n)
            self.notes.append(f"{what} {n}: {note}")

    def figures(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "notes"}


# ----------------------------------------------------------------------------- processes
def start(args: list[str], cwd: Path, data: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "BUDGETNAS_DATA": str(cwd / "nowhere")}
    with log.open("w") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", ENTRY, *args, "--data-dir", str(data)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def group(pgid: int) -> list[int]:
    """The processes of a process group, zombies included (/proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == pgid:
                pids.append(int(entry))
    return pids


def run_for(proc: subprocess.Popen, seconds: float) -> int:
    """Its exit code if it ends within `seconds`; else its process group is killed with SIGKILL
    (-9), and waited for until every process of it is reaped, as before a person's rerun."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    code = proc.wait()
    deadline = time.time() + 10
    while group(proc.pid) and time.time() < deadline:  # orphaned workers are reaped by init, a moment later
        time.sleep(0.05)
    return code


# ----------------------------------------------------------------------------- what the storage holds
def journal(cwd: Path, command: str) -> Path:
    return cwd / ("studies/s.journal" if command == "search" else "studies/d/drill.journal")


def snapshot(cwd: Path, command: str) -> dict:
    """{study name: {trial number: FrozenTrial}}, and for a drill its records under "drill". The
    journal is opened as any command opens it (a torn last line moved aside)."""
    path = journal(cwd, command)
    if not path.exists():
        return {}
    storage = make_storage(f"journal:{path}", None)
    out: dict = {}
    for name in (["s"] if command == "search" else ["d/explore", "d/narrow"]):
        try:
            out[name] = {t.number: t for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
        except KeyError:  # not made yet
            pass
    if command == "drill":
        try:
            out["drill"] = dict(optuna.load_study(study_name="d", storage=storage).user_attrs)
        except KeyError:
            pass
    return out


def same(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial | None) -> bool:
    return (b is not None and (b.state, b.params, b.values, b.user_attrs.get("history"))
            == (a.state, a.params, a.values, a.user_attrs.get("history")))


def studies(snap: dict):
    return ((name, trials) for name, trials in snap.items() if name != "drill")


def count_trials(tally: Tally, kills: list[dict], final: dict) -> None:
    lost = sorted({(name, n) for snap in kills for name, trials in studies(snap) for n, t in trials.items()
                   if t.state == TrialState.COMPLETE and not same(t, final.get(name, {}).get(n))})
    tally.bad("lost", len(lost), f"COMPLETE at a kill, missing or changed at the end: {lost}")
    for name, trials in studies(final):
        complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
        twice = {root: c for root, c in Counter(t.user_attrs.get("retry_of", t.number) for t in complete).items()
                 if c > 1}
        tally.bad("duplicated", sum(c - 1 for c in twice.values()),
                  f"{name}: trials COMPLETE more than once (trial: times) {twice}")
        retries = [(t, trials[t.user_attrs["retry_of"]]) for t in trials.values() if "retry_of" in t.user_attrs]
        # a retry is its trial's params enqueued: the same model; for a trial killed while it drew them,
        # those it had drawn, the rest drawn again (it had not trained); a retry killed while it drew
        # has some of them. Either way no param the two share differs.
        odd = [t.number for t, old in retries if any(old.params[k] != v for k, v in t.params.items() if k in old.params)]
        tally.bad("changed", len(odd), f"{name}: retries with other params than their trial: {odd}")
        tally.redrawn += sum(bool(t.params) and len(t.params) > len(old.params) for t, old in retries)
        running = [t.number for t in trials.values() if t.state == TrialState.RUNNING]
        tally.bad("stuck", len(running), f"{name}: RUNNING after the last command ended: {running}")


def count_search_run(tally: Tally, before: dict, final: dict) -> None:
    """The last (unkilled) search ran exactly the trials it asked for: those it made, or found queued."""
    old = before.get("s", {})
    ran = [n for n, t in final.get("s", {}).items()
           if t.state in FINISHED and (n not in old or old[n].state == TrialState.WAITING)]
    tally.bad("duplicated", max(0, len(ran) - SEARCH_TRIALS), f"the last search ran {ran}, asked {SEARCH_TRIALS}")
    tally.bad("failed", max(0, SEARCH_TRIALS - len(ran)), f"the last search ran {ran}, asked {SEARCH_TRIALS}")


def race_kept(old: dict, new: dict) -> bool:
    """The race as stored at a kill lives on in the final one: same entrants, each score, drop and
    training time kept, its end if it had one."""
    runners = {r["number"]: r for r in new.get("runners", [])}
    return (list(runners) == [r["number"] for r in old["runners"]]
            and all(runners[r["number"]]["scores"][: len(r["scores"])] == r["scores"] for r in old["runners"])
            and all(new.get("dropped", {}).get(k) == v for k, v in old.get("dropped", {}).items())
            and new.get("seconds", [])[: len(old.get("seconds", []))] == old.get("seconds", [])
            and old.get("ended") in (None, new.get("ended")))


def count_drill_records(tally: Tally, kills: list[dict], final: dict) -> None:
    end = final.get("drill", {})
    changed = set()
    for snap in kills:
        was = snap.get("drill", {})
        if end.get("done", [])[: len(was.get("done", []))] != was.get("done", []):
            changed.add("done")
        changed |= {key for key in ("space", "choice", "verify") if key in was and end.get(key) != was[key]}
        changed |= {f"verify seed {s}" for s, run in was.get("verify_runs", {}).items()
                    if end.get("verify_runs", {}).get(s) != run}
        if "race" in was and not race_kept(was["race"], end.get("race", {})):
            changed.add("race")
    tally.bad("changed", len(changed), f"drill records stored before a kill, not the same at the end: {sorted(changed)}")
    if end.get("done") != STAGES or "verify" not in end:
        tally.bad("failed", 1, f"the drill ended with stages {end.get('done')} and no verdict")


# ----------------------------------------------------------------------------- one command, killed K times
def kill_anywhere(command: str, kills: int, root: Path, rng: random.Random, per_episode: int,
                  episodes: int | None = None) -> Tally:
    """Kill `command` `kills` times at random points, up to `per_episode` kills on one study or
    drill before it is run to its end (a drill that ends on its own ends its episode too) and
    counted; then a fresh one, up to `episodes` of them."""
    data = root / "data"
    if not data.exists():
        write_idx_dataset(data)
    tally, t0, hours, refits = Tally(command), time.time(), DRILL_HOURS, 0
    while tally.kills < kills and tally.episodes < (episodes or kills):
        cwd = root / f"{command}{tally.episodes}"
        cwd.mkdir()
        tally.episodes += 1
        snaps: list[dict] = []
        ended, here = False, 0
        while here < per_episode and tally.kills < kills and not ended:
            args = SEARCH if command == "search" else drill_args(hours)
            log = cwd / f"run{tally.runs}.log"
            tally.runs += 1
            typical = SEARCH_S if command == "search" else drill_s(hours, snaps[-1] if snaps else {})
            code = run_for(start(args, cwd, data, log), rng.uniform(0.5, typical))
            text = log.read_text()
            if code == -signal.SIGKILL:
                tally.kills += 1
                here += 1
                torn = journal(cwd, command).with_name(journal(cwd, command).name + ".torn")
                torn_size = torn.stat().st_size if torn.exists() else 0
                try:
                    snaps.append(snapshot(cwd, command))
                except Exception as e:  # noqa: BLE001 - a storage a kill left unreadable is what is counted
                    tally.bad("failed", 1, f"{cwd}: the storage could not be read after a kill: {e!r}")
                    snaps.append({})
                tally.torn += int(torn.exists() and torn.stat().st_size > torn_size)  # moved aside by that open
                tally.interrupted += sum(t.state == TrialState.RUNNING for _, ts in studies(snaps[-1]) for t in ts.values())
                continue
            tally.ended_first += 1
            too_short = re.search(r"--hours \S+ is too short .* use --hours ([\d.]+)", text)
            if command == "drill" and code == 2 and too_short and not (cwd / "studies/d").exists() and refits < 3:
                hours, refits = float(too_short.group(1)), refits + 1  # refused, nothing written: the least it names
                continue
            if code != 0 or "Traceback" in text:
                tally.bad("failed", 1, f"{log} ended with exit code {code}: {text[-600:]}")
            ended = command == "drill"
        if command == "drill" and ended:
            final = snapshot(cwd, command)
        else:  # the same command, to its end
            before = snapshot(cwd, command)
            log = cwd / f"run{tally.runs}.log"
            tally.runs += 1
            code = run_for(start(SEARCH if command == "search" else drill_args(hours), cwd, data, log), 600)
            text = log.read_text()
            if code != 0 or "Traceback" in text:
                tally.bad("failed", 1, f"{log}, the last run, ended with exit code {code}: {text[-600:]}")
            final = snapshot(cwd, command)
            if command == "search":
                count_search_run(tally, before, final)
        count_trials(tally, snaps, final)
        if command == "drill":
            count_drill_records(tally, snaps, final)
    tally.seconds = round(time.time() - t0, 1)
    return tally


def assert_clean(tally: Tally) -> None:
    counts = {k: getattr(tally, k) for k in ("lost", "duplicated", "stuck", "changed", "failed")}
    assert counts == dict.fromkeys(counts, 0), "\n".join(tally.notes)


@pytest.mark.parametrize("command, kills", [("search", 3), ("drill", 2)])
def test_a_command_killed_at_random_points_resumes_without_loss_or_repeat(tmp_path, command, kills):
    """One study or drill, killed up to `kills` times (a drill may end first) and run to its end."""
    tally = kill_anywhere(command, kills, tmp_path, random.Random(38), per_episode=kills, episodes=1)
    assert tally.kills >= 1, tally
    assert_clean(tally)


@pytest.mark.slow
@pytest.mark.parametrize("search_kills, drill_kills", [(20, 20)])
def test_kill_anywhere_figures(tmp_path, search_kills, drill_kills):
    """The figures in docs/reliability.md: one JSON line on stdout (run with -s)."""
    rng = random.Random(int(os.environ.get("BUDGETNAS_KILL_SEED", "38")))
    tallies = [kill_anywhere("search", search_kills, tmp_path, rng, per_episode=5),
               kill_anywhere("drill", drill_kills, tmp_path, rng, per_episode=5)]
    print(json.dumps({"kill_anywhere": [t.figures() for t in tallies]}), flush=True)
    for t in tallies:
        assert_clean(t)


def test_the_counts_count_what_a_kill_could_break():
    """The counting itself, on trials made up to show each fault once (no training)."""
    from optuna.distributions import FloatDistribution

    def trial(number, state, x, value=None, **attrs):
        drawn = {} if x is None else {"x": x}
        t = optuna.trial.create_trial(state=state, params=drawn, distributions=dict.fromkeys(drawn, FloatDistribution(0, 1)),
                                      value=value, user_attrs={"history": [{"val_acc": value}], **attrs})
        t.number = number
        return t

    done = TrialState.COMPLETE
    at_kill = {"s": {0: trial(0, done, 0.1, 90.0), 1: trial(1, done, 0.2, 91.0), 2: trial(2, TrialState.RUNNING, 0.3)}}
    final = {"s": {0: trial(0, done, 0.1, 90.0), 1: trial(1, done, 0.2, 92.0),  # 1: its value changed (lost)
                   2: trial(2, done, 0.3, 93.0), 3: trial(3, done, 0.3, 93.5, retry_of=2),  # 2 completed twice
                   4: trial(4, TrialState.RUNNING, 0.4),  # stuck
                   5: trial(5, TrialState.FAIL, 0.5), 6: trial(6, done, 0.6, 96.0, retry_of=5),  # another model
                   7: trial(7, TrialState.FAIL, None), 8: trial(8, done, 0.8, 98.0, retry_of=7),  # killed drawing
                   9: trial(9, TrialState.FAIL, 0.9), 10: trial(10, TrialState.FAIL, None, retry_of=9)}}  # so was its retry
    tally = Tally("search")
    count_trials(tally, [at_kill], final)
    count_search_run(tally, at_kill, final)  # it ran 3 and 5 to 10 (4 not finished): 7 of the 6 asked
    assert (tally.lost, tally.duplicated, tally.stuck, tally.changed, tally.failed, tally.redrawn) == (1, 2, 1, 1, 0, 1)
    race = {"runners": [{"number": 3, "params": 1, "scores": [9.0, 8.0]}], "dropped": {}, "seconds": [1.0]}
    was = {"drill": {"done": ["explore", "narrow"], "race": race, "choice": {"trial": 3}}}
    end = {"drill": {"done": STAGES, "race": {**race, "runners": [{**race["runners"][0], "scores": [9.0, 7.0]}]},
                     "choice": {"trial": 3}, "verify": {}}}
    tally = Tally("drill")
    count_drill_records(tally, [was], end)
    assert (tally.changed, tally.failed) == (1, 0) and "race" in tally.notes[0]


# A search killed at a stated point the random kills rarely hit: right after Optuna made the trial
# (RUNNING, in the storage), before the objective starts. At 3ea755a the objective stamped the trial
# with its worker, so this one had none and stayed RUNNING for good (docs/reliability.md). Killed
# before the sampler stamps it (a few storage writes later), it was judged gone only a minute after
# it began: CI's kill-anywhere run resumed sooner and ended with it RUNNING (now the study's joins
# say whose it can be, study/workers.py `join`).
KILLED_AFTER_ASK = """
import os, signal, sys
import optuna
from budgetnas.search.cli import main
from budgetnas.search.study.config import StampingTPE

ask, stamp = optuna.Study.ask, StampingTPE.before_trial

def die_once_one_completed(study):
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        os.kill(os.getpid(), signal.SIGKILL)

def ask_then_die(self, *a, **k):  # the trial made and stamped, its objective not begun
    trial = ask(self, *a, **k)
    die_once_one_completed(self)
    return trial

def die_before_stamp(self, study, trial):  # the trial made, not yet stamped
    die_once_one_completed(study)
    return stamp(self, study, trial)

if sys.argv.pop(1) == "before-stamp":
    StampingTPE.before_trial = die_before_stamp
else:
    optuna.Study.ask = ask_then_die
main(sys.argv[1:])
"""


@pytest.mark.parametrize("point", ["after-ask", "before-stamp"])
def test_a_search_killed_between_ask_and_objective_leaves_no_trial_running(tmp_path, point):
    write_idx_dataset(tmp_path)
    args = [*SEARCH[:SEARCH.index("--trials")], "--trials", "3", "--epochs", "1", "--val-size", "200",
            "--no-warm-start", "--workers", "1", "--threads", "1", "--data-dir", str(tmp_path)]
    env = {**os.environ, "BUDGETNAS_DATA": str(tmp_path / "nowhere")}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_ASK, point, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-800:] + killed.stderr[-800:]
    resumed = subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-800:] + resumed.stderr[-800:]
    trials = snapshot(tmp_path, "search")["s"]
    assert not [n for n, t in trials.items() if t.state == TrialState.RUNNING]
