"""Run a study: load data once, open (or resume) the study, optimize, log one line a trial."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ...space.errors import BadInput
from ..engine.results import studies_root
from ..engine.seeds import die_with_parent
from ..engine.train import Engine, threads_each
from .config import StudyConfig, StudyError, open_study
from .objective import make_objective
from .storage import make_storage, redact, worker_id


def artifact_dir(name: str) -> Path:
    """Where a study's artifacts live: next to the study, out of git."""
    return studies_root() / name / "artifacts"


def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    a = trial.user_attrs
    value = f"val {trial.values[0]:.2f}%" if trial.values else a.get("pruned_reason", trial.state.name.lower())
    secs = a.get("seconds", 0.0)
    print(f"trial {trial.number:3d} {trial.state.name:8s} {a.get('params', 0):6,} params  {value}  ({secs:.0f}s)",
          flush=True)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C or `kill`, or by the machine (a full disk), with the
    error's traceback, one per worker: keep its line (which trial, which params), drop the traceback
    (an OSError is reported once, as one line, by the command)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (KeyboardInterrupt, OSError)):
            record.exc_info = None
        return True


NO_INTERRUPT_TRACEBACK = _NoInterruptTraceback()


def run(cfg: StudyConfig, engine: Engine = Engine(), storage=None, worker: int = 0,
        callbacks: tuple = (), announce: bool = True) -> optuna.Study:
    """Optimize `cfg.trials` more trials (or until `cfg.timeout`) and return the study.
    `callbacks`: more `callback(study, trial)` after each trial (picklable, for workers).
    `announce`: print the data and the study's start-up lines (`run_workers` prints them for all)."""
    optuna.logging.get_logger("optuna.study._optimize").addFilter(NO_INTERRUPT_TRACEBACK)  # once: a set
    data = None
    if not cfg.dry_run:
        cfg, data = cfg.with_data()
    if storage is None and cfg.dry_run:  # a dry run never touches the real study
        storage = optuna.storages.InMemoryStorage()
    ran = _trials_run(cfg, storage)
    study = open_study(cfg, storage=storage, worker=worker)
    if announce:
        print_start(cfg, data, study, ran)
    if not cfg.dry_run and worker == 0:
        out = studies_root() / cfg.name / "config.resolved.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**cfg.to_dict(), "engine": engine.pinned().to_dict()}, indent=1) + "\n")
    if worker == 0:
        fail_orphans(study)
    join(study)
    objective = make_objective(budget=cfg.budget, space=cfg.space, epochs=cfg.epochs, data=data,
                               pareto=cfg.objective == "pareto", fill=cfg.fill, seed=cfg.seed, engine=engine, dry_run=cfg.dry_run,
                               notes=not cfg.dry_run, artifact_dir=None if cfg.dry_run else artifact_dir(cfg.name))
    try:
        study.optimize(objective, n_trials=cfg.trials, timeout=cfg.timeout, callbacks=[log_trial, *callbacks])
    except AssertionError as e:  # Optuna hides a storage's error as a trial is told (a full disk) behind "Should not reach"
        if isinstance(e.__context__, OSError):
            raise e.__context__ from None
        raise
    return study


JOINED = "joined "  # a study system attr a process sets before it asks any trial: "joined HOST:PID" -> when (epoch s)


def join(study: optuna.Study) -> None:
    """Record that this process may ask trials of `study` from now on. A process killed between
    asking a trial and stamping it (a few storage writes) leaves a RUNNING trial with no worker;
    the joins say whose it can be: a process that joined before the trial began. Its first join
    stands."""
    if JOINED + worker_id() not in study._storage.get_study_system_attrs(study._study_id):
        study._storage.set_study_system_attr(study._study_id, JOINED + worker_id(), time.time())


def joined(study: optuna.Study) -> dict[str, float]:
    """{worker: when it joined} for every process that ever asked trials of `study`."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k.removeprefix(JOINED): v for k, v in attrs.items() if k.startswith(JOINED)}


def dead_here(worker: str) -> bool:
    """Is `worker` ("HOST:PID") a process of this machine that no longer exists (killed, rebooted)?
    Other machines' workers are theirs to judge (their heartbeat)."""
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


def worker_gone(t: optuna.trial.FrozenTrial, joins: dict[str, float]) -> bool:
    """Was `t` run by a process that is gone (`dead_here`)? A RUNNING trial no worker stamped was
    asked by a process that joined the study (`joins`, from `joined`) before the trial began: gone
    when every such process is."""
    if "worker" in t.user_attrs:
        return dead_here(t.user_attrs["worker"])
    if t.state != TrialState.RUNNING or t.datetime_start is None:
        return False
    began = t.datetime_start.timestamp()
    return all(dead_here(w) for w, at in joins.items() if at <= began)


def fail_gone(study: optuna.Study) -> None:
    """End FAIL the RUNNING trials whose worker is gone: on this machine by its pid (`worker_gone`),
    on any machine by its heartbeat where the storage keeps them (Optuna then queues a copy)."""
    joins = joined(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_gone(t, joins):
            study.tell(t.number, state=TrialState.FAIL)
    with warnings.catch_warnings():  # "experimental" since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_orphans(study: optuna.Study) -> None:
    """Crash recovery on any storage: a RUNNING trial whose worker is gone (`worker_gone`) ends FAIL
    at once (on SQLite and PostgreSQL the heartbeat would only do it after its grace period), and a
    FAIL trial of such a worker (one stopped by Ctrl-C or `kill`) is enqueued again, once. A retry
    that fails too is not retried again."""
    trials, joins = study.get_trials(deepcopy=False), joined(study)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state not in (TrialState.RUNNING, TrialState.FAIL) or not worker_gone(t, joins):
            continue
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
        retry = "retry_of" not in t.user_attrs and t.number not in retried
        if retry:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number,
                                                      **{k: t.user_attrs[k] for k in ("baseline", "warm_from")
                                                         if k in t.user_attrs}})
        if retry or t.state == TrialState.RUNNING:
            who = t.user_attrs.get("worker", "killed before it stamped the trial")
            print(f"trial {t.number:3d} FAIL     its worker ({who}) is gone"
                  f"{'; enqueued again' if retry else ''}", flush=True)


def _trials_run(cfg: StudyConfig, storage) -> int:
    """Trials the study has run, or begun (0 if it does not exist yet): not those only queued."""
    try:
        storage = storage if storage is not None else make_storage(cfg.storage_url, None)
        trials = storage.get_all_trials(storage.get_study_id_from_name(cfg.name), deepcopy=False)
    except KeyError:
        return 0
    return sum(t.state != TrialState.WAITING for t in trials)


def print_start(cfg: StudyConfig, data, study: optuna.Study, ran: int, workers: int = 1) -> None:
    """The data and the study as a search starts: created or resumed, what is queued (warm starts;
    on a resume, retries too), and what this command runs, in all."""
    if data is not None:
        print(f"data: {cfg.dataset}, {len(data.train):,} training and {len(data.val):,} validation images", flush=True)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    print(f"study {cfg.name}: {f'resumed with {ran} trials' if ran else 'created'} in {redact(cfg.storage_url)}"
          + (f"; {queued} {'queued' if ran else 'warm starts queued'}" if queued else "")
          + f"; up to {cfg.trials} more trials" + (f" shared by {workers} workers" if workers > 1 else "")
          + (f" or {cfg.timeout / 60:.1f} min" if cfg.timeout else ""), flush=True)


def alive(pid: int) -> bool:
    """Whether process `pid` runs; a zombie (dead, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # Linux: the state letter follows the command name in parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS), or it just ended
        return True


def run_workers(cfg: StudyConfig, workers: int | None = None, engine: Engine = Engine(),
                callbacks: tuple = ()) -> optuna.Study:
    """`workers` processes on one study, `cores // workers` torch threads each.

    None: one single-threaded worker per core (`budgetnas bench --workers 1 2` measured it
    faster than one worker on all cores), where the storage lets processes share it; one
    worker on SQLite. The parent creates the study (and enqueues the baselines) first, so
    workers only ever resume it; each worker's sampler has its own seed, and the trials are
    split between them.
    """
    if workers is None:
        shareable = not (cfg.dry_run or cfg.storage_url.startswith("sqlite"))
        workers = min(os.cpu_count() or 1, cfg.trials) if shareable else 1
    if workers < 1:
        raise BadInput(f"workers must be >= 1, but got {workers}.")
    if workers == 1:
        stop_on_signals()  # `kill` ends the running trial as FAIL, as Ctrl-C does
        return run(cfg, engine, callbacks=callbacks)
    if cfg.dry_run or cfg.storage_url.startswith("sqlite"):
        raise BadInput("--workers > 1 needs a storage that several processes can share safely: "
                         "--storage journal:studies/NAME.journal (one machine) or a postgresql:// URL.")
    cfg, data = cfg.with_data()  # fail here, not in K workers; they get the validation size chosen
    ran = _trials_run(cfg, None)
    study = open_study(cfg)
    threads = threads_each(workers)
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for w in range(workers):
        share = cfg.trials // workers + (w < cfg.trials % workers)
        if share:
            procs.append(ctx.Process(target=_worker, args=(replace(cfg, trials=share), w, threads, engine,
                                                                 callbacks)))
    print_start(cfg, data, study, ran, len(procs))  # here, once: a worker knows only its share
    stop_on_signals()  # `kill` of this process stops the workers, as Ctrl-C does
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the workers too, `kill PID` only this process
        started = [p for p in procs if p.pid is not None]
        for p in started:
            p.terminate()  # SIGTERM: the worker ends its running trial as FAIL, then exits
        for p in started:
            p.join()
        raise
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if EXIT_SAID in failed:
        raise StudyError(f"{failed.count(EXIT_SAID)} worker(s) stopped on the error above (a full disk, a storage "
                         "gone?); the study keeps what was stored: fix that, then the same command resumes it.")
    if failed:
        raise StudyError(f"{len(failed)} worker(s) died (exit codes {failed}; -9: killed, e.g. out of memory); "
                         "their trials end FAIL and are retried when the same command resumes the study.")
    return open_study(cfg)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM stop this process, even where a shell started it ignoring SIGINT (`cmd &`)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)


def _stop(signum, frame):
    for sig in STOP_SIGNALS:  # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt  # Optuna then ends the running trial as FAIL instead of leaving it RUNNING


EXIT_SAID = 74  # sysexits' EX_IOERR: a worker stopped by the machine (a full disk), and has said so in one line


def _worker(cfg: StudyConfig, worker: int, threads: int, engine: Engine, callbacks: tuple = ()) -> None:
    stop_on_signals()
    die_with_parent()
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        run(cfg, engine, worker=worker, callbacks=callbacks, announce=False)
    except KeyboardInterrupt:  # its trial is already FAIL; the parent reports the interruption
        sys.exit(130)
    except (OSError, BadInput) as e:  # the machine's (a full disk; the storage then cannot open): one line, not a traceback
        said = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "") if isinstance(e, OSError) else e
        print(f"worker {worker}: {said}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SAID)
