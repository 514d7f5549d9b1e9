"""`budgetnas`: the command line. Each sub-command is a thin shell over one module."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from ..space.errors import BadInput
from .drill.config import DrillConfig
from .engine.results import studies_root
from .flags import add_fields, given
from .study.config import PRUNERS, StudyConfig, check_bar

EXIT_USAGE = 2  # bad input: a path, a file, a value; one line on stderr
EXIT_BUG = 70  # an internal error (BSD's EX_SOFTWARE): a bug in budgetnas, reported with its traceback


class UserError(BadInput):
    """Bad input from the user; printed as one line, exit code 2."""


MAX_COUNT = 10**9  # no count this tool takes (seeds, epochs, images, trials...) is larger
MAX_PROCESSES = 1024  # threads, workers, jobs: more than any machine's cores


def at_least(low: int, high: int = MAX_COUNT):
    """An argparse type: a whole number in [low, high] (a flag's domain, stated beside the flag)."""
    def whole(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number in [{low}, {high}], but got {text!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number in [{low}, {high}], but got {n}")
        return n
    return whole


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    n = at_least(1)(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 1-65535, but got {n}")
    return n


def bar_percent(text: str) -> float:
    """An argparse type: a bar, as RunConfig checks it (study/config.py `check_bar`)."""
    try:
        bar = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is a test accuracy in percent, but got {text!r}") from None
    try:
        return check_bar(bar)
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("bar ").rstrip(".")) from None


def writable(path: str | Path | None) -> Path | None:
    """An output file checked before any work: its folder exists and both may be written. A run of
    half an hour must not end in a traceback and no result."""
    if path is None:
        return None
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name to write.")
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist.")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: permission denied.")
    return path


def set_threads(n: int | None) -> None:
    torch.set_num_threads(n or os.cpu_count() or 1)


def add_data_args(p: argparse.ArgumentParser, dataset: bool = True, data_dir: bool = True) -> None:
    """`dataset=False` where the dataset is a study's own (it is stored with the study) or a
    config field's flag; `data_dir=False` where it is a config field's flag."""
    if dataset:
        p.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | kmnist (IDX files under the data root), "
                       "or your own: a .npz (x_train, y_train, x_test, y_test), an image folder (train/<class>/, "
                       "test/<class>/) or a folder of IDX files")
    if data_dir:
        p.add_argument("--data-dir", default=None, help="data root (default: $BUDGETNAS_DATA, else ./data)")
    p.add_argument("--threads", type=at_least(1, MAX_PROCESSES), default=None, help="CPU threads for torch (default: all cores)")


def add_engine_args(p: argparse.ArgumentParser, certify: bool) -> None:
    """A search only ranks models on validation, so it trains the fast way (bf16 where native,
    channels last and fast dropout masks on a CPU). Verification and baselines certify test
    numbers: by default they train exactly as the exported module's own train() does (fp32,
    eager, NCHW, torch's dropout), which reproduces stored runs seed for seed; the other settings
    change the trajectory (docs/performance.md)."""
    from .engine.train import CHOICES

    precision, layout, masks = ("fp32", "off", "torch") if certify else ("auto", "auto", "auto")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--precision", default=precision, choices=CHOICES["precision"],
                   help=f"bf16 autocast for convolutions; auto: where it pays, a CPU with native bf16 (default: {precision})")
    p.add_argument("--channels-last", default=layout, choices=CHOICES["channels_last"],
                   help=f"NHWC weights and batches; auto: on a CPU, where it pays (default: {layout})")
    p.add_argument("--compile", default="off", choices=CHOICES["compile"],
                   help="torch.compile the model; auto: off, no faster than channels last for a worker a core (default: off)")
    p.add_argument("--masks", default=masks, choices=CHOICES["masks"],
                   help=f"dropout masks: fast (cut from 64-bit draws) or torch's; auto: fast on a CPU, where it pays (default: {masks})")


def engine_of(args):
    from .engine.train import Engine

    return Engine(args.device, args.precision, args.compile, args.channels_last, args.masks).pinned()


def add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default=None, help="study name")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///studies/NAME.db)")
    p.add_argument("--config", dest="study_config", default=None,
                   help="a study file: its name and storage, unless --study/--storage say otherwise")
    p.set_defaults(prepare=resolve_study_args)


def resolve_study_args(args) -> None:
    """Name and storage from --config, as `search` took them; flags win."""
    if args.study_config:
        from .study.config import load_config

        cfg = load_config(args.study_config)
        args.study, args.storage = args.study or cfg.name, args.storage or cfg.storage_url
    if not args.study:
        raise UserError("which study? Give --study NAME or --config FILE.")
    from .study.config import check_name

    check_name(args.study)  # it names the folder the report, export and dashboard files go to


# ----------------------------------------------------------------------------- baseline / verify
def cmd_baseline(args) -> None:
    from .. import baselines
    from .engine import data as D
    from .engine.results import baseline_markdown, baselines_dir, provenance, write_json
    from .engine.seeds import DataSpec, SeedRun, train_seeds
    from .engine.verify import fit_to, load_candidate, summarise

    engine, label = engine_of(args), D.label(args.dataset)
    root = baselines_dir(args.out)
    names = baselines.NAMES if args.name == "all" else (baselines.get(args.name).name,)
    spec = DataSpec(args.dataset, args.data_dir)
    data = None if args.markdown_only else spec.load()
    for name in names if data is not None else ():
        try:
            cand = fit_to(load_candidate(name), data)
        except BadInput as e:
            if args.name != "all":
                raise
            print(e)
            continue
        print(f"{name}: {cand.params:,} params, {args.dataset}, seeds 0-{args.seeds - 1}, recipe {cand.recipe}")
        runs = [SeedRun(spec, seed, target=name, epochs=args.epochs) for seed in range(args.seeds)]
        for record in train_seeds(runs, engine, args.jobs, log=print):
            summary = summarise(record)
            path = root / label / f"{name}-seed{record['seed']}.json"
            write_json(path, {"baseline": name, "seed": record["seed"], "dataset": args.dataset,
                              "summary": {k: v for k, v in summary.items() if k != "history"},
                              "arch": cand.arch.to_dict(), "history": record["history"], **provenance(engine)})
            print(f"{name} seed {record['seed']}: min last-3 test {summary['min_last3']:.2f}%  -> {path}")
    out = root / ("RESULTS.md" if label == "mnist" else f"RESULTS-{label}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(baseline_markdown(label, root) + "\n")
    print(f"wrote {out}")


def cmd_verify(args) -> None:
    from pathlib import Path

    from .engine import data as D
    from .engine.results import write_json
    from .engine.seeds import DataSpec, SeedRun, train_seeds
    from .engine.verify import (
        distribution_line,
        fit_to,
        load_candidate,
        probe_module,
        summarise,
        verdict,
        verdict_line,
        verify_record,
    )

    writable(args.json)
    if args.target.endswith(".py") and Path(args.target).is_file():
        probe_module(args.target)
    cand, engine = load_candidate(args.target), engine_of(args)  # a bad module is refused before the data is read
    spec = DataSpec(args.dataset, args.data_dir)
    cand = fit_to(cand, spec.load())  # a data error is one line here, not one per job
    runs = [SeedRun(spec, seed, target=args.target, epochs=args.epochs) for seed in range(args.seeds)]
    summaries = sorted((summarise(r) for r in train_seeds(runs, engine, args.jobs, log=print)), key=lambda s: s["seed"])
    if len(summaries) != len(runs):  # a verdict needs every seed trained
        raise RuntimeError(f"verify trained {len(summaries)} of {len(runs)} seeds")
    print(f"\n{'seed':>4} {'params':>7} {'best':>7} {'last-3 test accuracy':>26} {'min':>7}")
    for s in summaries:
        last3 = " ".join(f"{a:.2f}" for a in s["last3_test"])
        note = f"  diverged: {s['diverged']}" if s.get("diverged") else ""
        print(f"{s['seed']:>4} {s['params']:>7} {s['best_test']:>6.2f}% {last3:>26} {s['min_last3']:>6.2f}%{note}")
    v = verdict(summaries, args.bar if args.bar is not None else D.default_bar(args.dataset))
    if args.json:
        write_json(Path(args.json), verify_record(args.target, v, summaries, args.dataset, cand.recipe, engine))
    print(verdict_line(v, cand.params))
    print(distribution_line(v))
    if v["passed"] is False:  # no bar, no verdict: not a failure
        sys.exit(1)


# ----------------------------------------------------------------------------- search / status
def cmd_search(args) -> None:
    from .report.status import summary
    from .study.config import StudyConfig, load_config
    from .study.workers import run_workers

    cfg = load_config(args.config, **given(args, StudyConfig))
    study = run_workers(cfg, args.workers, engine_of(args))
    if cfg.dry_run:
        print(dry_run_summary(study))
    print(summary(study))


def dry_run_summary(study) -> str:
    from optuna.trial import TrialState

    over = [t.user_attrs.get("pruned_by") == "budget" for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    half = len(over) // 2
    first, last = sum(over[:half]) / max(half, 1), sum(over[half:]) / max(len(over) - half, 1)
    return f"dry run: over-budget share {first:.0%} in the first {half} trials, {last:.0%} in the last {len(over) - half}"


def cmd_drill(args) -> None:
    from .drill.run import Drill
    from .report.notebook import write_drill_report

    cfg = DrillConfig(**given(args, DrillConfig))
    drill = Drill(cfg, engine_of(args))
    out = drill.run()
    print(f"wrote {write_drill_report(drill.study, cfg.folder)}")
    if out.verdict["passed"] is False:
        sys.exit(1)


def cmd_join(args) -> None:
    from .drill.join import join

    cfg = DrillConfig(name=args.name, storage=args.storage)  # the name checked, the drill's storage by default
    existing_storage(cfg.name, cfg.storage_url)  # a drill that is not there is refused before anything is written
    join(cfg.name, cfg.storage_url, args.workers or cfg.n_workers, engine_of(args), args.data_dir)


def cmd_status(args) -> None:
    from .drill.state import KEY
    from .report.status import drill_summary, summary

    study = load_existing_study(args.study, args.storage)
    print(drill_summary(study) if KEY in study.user_attrs else summary(study))


def existing_storage(name: str, url: str | None):
    """The storage of a study that must already exist; UserError otherwise."""
    from .study.storage import default_storage, make_storage, redact, storage_file

    drill_journal = studies_root() / name / "drill.journal"  # a drill's default storage
    url = url or (f"journal:{drill_journal}" if drill_journal.is_file() else default_storage(name))
    path = storage_file(url)
    if path is not None and not path.exists():
        run = f"drill --name {name}" if path == drill_journal else f"search --study {name}"
        raise UserError(f"no study database {path}; run `budgetnas {run}` first.")
    storage = make_storage(url, heartbeat=None)
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        raise UserError(f"no study {name!r} in {redact(url)}.") from None
    return storage


def load_existing_study(name: str, url: str | None):
    """A study made by budgetnas (`search` or `drill`); UserError for any other."""
    import optuna

    from .drill.state import KEY
    from .study.config import FINGERPRINT

    study = optuna.load_study(study_name=name, storage=existing_storage(name, url))
    set_up = any(t.state != optuna.trial.TrialState.WAITING for t in study.trials)  # not a set-up cut short
    if FINGERPRINT not in study.user_attrs and KEY not in study.user_attrs and set_up:
        raise UserError(f"study {name!r} was not made by budgetnas (`search` or `drill`): it holds no architectures.")
    return study


def cmd_render(args) -> None:
    from pathlib import Path

    from .engine.render import render_file

    out = writable(args.output or Path(args.arch).with_suffix(".py"))
    source = render_file(args.arch)
    out.write_text(source)
    print(f"wrote {out}")


def cmd_export(args) -> None:
    from pathlib import Path

    from .report.export import export

    writable(args.output)
    study = load_existing_study(args.study, args.storage)
    out = export(study, Path(args.output), args.trial, args.params_max, args.epochs, args.confirmed)
    print(f"wrote {out}")


def cmd_confirm(args) -> None:
    from .study import confirm as C

    study = load_existing_study(args.study, args.storage)
    C.candidates(study, args.top)  # nothing to confirm: say so before loading any data
    C.confirm(study, C.study_data(study, args.data_dir), args.top, args.seeds, engine_of(args), args.jobs,
              on_run=lambda n, seed, score: print(f"trial {n:>4} seed {seed}: val {score:.2f}% (mean of last 3)"))
    print(C.table(study))


def cmd_report(args) -> None:
    from pathlib import Path

    from .drill.state import KEY
    from .report.notebook import write_drill_report
    from .report.study import write_report

    study = load_existing_study(args.study, args.storage)
    if KEY in study.user_attrs:  # a drill's notebook, from its storage and verify.json
        print(f"wrote {write_drill_report(study, studies_root() / args.study)}")
        return
    out = Path(args.output or studies_root() / args.study / "REPORT.md")
    # by default verify.json (the exported best) first, then the other candidates' verify-*.json
    verify = [Path(v) for v in args.verify] or sorted(out.parent.glob("verify*.json"),
                                                       key=lambda p: (p.stem != "verify", p.name))
    if missing := [str(p) for p in verify if not p.is_file()]:
        raise UserError(f"no verify results at {', '.join(missing)}: run `budgetnas verify ... --json` first.")
    for path in verify:  # every input read before anything is written
        try:
            result = json.loads(path.read_text())
            result["verdict"], result["runs"][0]["history"]  # what the report reads
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise UserError(f"{path}: not a verify result written by `budgetnas verify --json` ({e}).") from None
    writable(args.output)
    print(f"wrote {write_report(study, out, verify)}")


def cmd_parity(args) -> None:
    from pathlib import Path

    from .engine import parity as P
    from .engine.results import write_json

    writable(args.json)
    reference, *others = (P.read_record(path) for path in [args.reference, *args.other])
    comparisons = {path: P.compare(reference, other) for path, other in zip(args.other, others, strict=True)}
    for path, cmp in comparisons.items():
        print(P.table(path, cmp) + "\n")
    if args.json:
        write_json(Path(args.json), {"reference": args.reference, "comparisons": comparisons})
    if not all(c["parity"] for c in comparisons.values()):
        sys.exit(1)


def cmd_pruners(args) -> None:
    from .study import pruners

    study = load_existing_study(args.study, args.storage)
    rows = [pruners.replay(study, p, args.bar) for p in sorted(PRUNERS, key=lambda p: p != "none")]  # none first: the baseline row
    print(f"replay of {rows[0]['trials']} fully trained trials of {args.study!r}, epoch by epoch:")
    print(pruners.table(rows))


def cmd_dashboard(args) -> None:
    from optuna.artifacts import FileSystemArtifactStore

    from .report import dashboard
    from .study.workers import artifact_dir

    storage = existing_storage(args.study, args.storage)
    store = artifact_dir(args.study)
    app = dashboard.build_app(storage, args.host, FileSystemArtifactStore(str(store)),
                              writable=args.writable, allow_notes=args.allow_notes)
    try:
        server = dashboard.bind(app, args.host, args.port)  # a bad host or a taken port: refused, nothing written
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    if not dashboard.is_loopback(args.host):
        can = " and can delete studies" if args.writable else " and can edit notes" if args.allow_notes else ""
        print(f"budgetnas: warning: optuna-dashboard has no authentication{can}; "
              f"it is now reachable by anyone who can reach {args.host}:{args.port}. Prefer an SSH tunnel "
              "(ssh -L 8080:127.0.0.1:8080 host) or an authenticating reverse proxy.", file=sys.stderr)
    store.mkdir(parents=True, exist_ok=True)
    mode = "writable" if args.writable else "read-only except notes" if args.allow_notes else "read-only"
    print(f"optuna-dashboard for study {args.study!r}: {dashboard.base_url(args.host, args.port)}/dashboard/studies/"
          f"{storage.get_study_id_from_name(args.study)} ({mode}; Ctrl-C stops it)", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("dashboard stopped")


def cmd_bench(args) -> None:
    from pathlib import Path

    from .engine import bench as B
    from .engine.results import provenance, write_json
    from .engine.seeds import DataSpec
    from .engine.train import resolve_device
    from .engine.verify import fit_to, load_candidate

    writable(args.json)
    if len(args.arch) > 1 and not args.trainings:
        raise UserError("bench measures one --arch; several only with --trainings.")
    if args.engines and not args.trainings:
        raise UserError("--engines chooses what --trainings measures; add --trainings.")
    if args.engines and set(args.engines) == {"old"}:
        raise UserError("--engines old is measured beside a stage engine: add search, compiled or verify.")
    if sum(map(bool, (args.trainings, args.workers, args.profile))) > 1:
        raise UserError("bench measures one thing at a time: --trainings, --workers or --profile.")
    if (args.trainings or args.workers or args.profile) and args.device not in ("auto", "cpu"):
        raise UserError("bench --trainings, --workers and --profile measure CPU workers as the drill runs them; "
                        "leave out --device.")
    engine_device = str(resolve_device(args.device))  # a bad --device before any measurement
    data = DataSpec(args.dataset, args.data_dir, subset=args.images).load()  # the images exist before any subprocess
    archs = []
    for target in args.arch:
        cand = fit_to(load_candidate(target), data)
        if cand.arch is None:
            raise UserError(f"bench measures an Arch (a baseline or an Arch .json), but {target} is a module.")
        archs.append(cand.arch)
    arch, cores = archs[0], args.threads or os.cpu_count() or 1
    source = (args.dataset, args.data_dir)
    repeats = args.repeats or (1 if args.trainings else 3)
    extra = {}
    if args.trainings:
        engines = [e for e in B.TRAINING_ENGINES if e in (args.engines or B.TRAINING_ENGINES)]
        sizes = B.dataset_sizes(*source)
        print(f"bench --trainings: {', '.join(args.arch)}; {args.images} training images a process, 2 epochs (the "
              f"last timed); {cores} cores: stage engines on {cores} workers x 1 thread, old on 1 x {cores}; a full "
              f"training: {sizes['train']:,} images + {sizes['val']:,} validation (search stages) or "
              f"{sizes['train'] + sizes['val']:,} + {sizes['test']:,} test (verify); {repeats} repeat{'s' if repeats > 1 else ''}", flush=True)
        rows = B.run_trainings_bench(list(zip(args.arch, archs, strict=True)), args.images, source, cores, engines,
                                     repeats, log=lambda line: print(line, flush=True))
        figures = B.trainings_figures(rows, sizes)
        print(B.trainings_table(figures))
        extra = {"archs": args.arch, "sizes": sizes, "engines": engines, "figures": figures}
    elif args.profile:
        print(f"bench --profile: {args.arch[0]}, one epoch of {args.images} training images, "
              f"{B.search_engine('cpu')}, 1 thread (a drill worker), after one epoch of start-up", flush=True)
        rows = B.profile_training(arch, data)
        print(B.profile_table(rows))
        evals = B.eval_speeds(arch, data)
        print(f"\n{B.eval_table(evals)}")
        extra = {"eval": evals}
    elif args.workers:
        print(f"bench: {args.arch[0]}, {args.images} training images per worker, {cores} cores shared by "
              f"{' or '.join(map(str, args.workers))} workers ({B.search_engine('cpu')}), {repeats} repeats")
        rows = B.run_workers_bench(arch, args.images, source, cores, args.workers, repeats)
        print(B.workers_table(rows))
    else:
        print(f"bench: {args.arch[0]}, {args.images} training images, {engine_device}, {cores} threads, "
              f"{repeats} repeats of each engine")
        rows = B.run_bench(arch, args.images, source, cores, repeats, engine_device)
        print(B.table(rows))
    if args.json:
        write_json(Path(args.json), {"arch": args.arch[0], **extra, "images": args.images, "rows": rows, **provenance()})


# ----------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """Bad flags are one line and exit 2, as every other bad input (`--help` shows the usage). No
    abbreviations: `--seed 7` is not silently `--seeds 7`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        command = self.prog.removeprefix("budgetnas").strip()
        self.exit(EXIT_USAGE, f"budgetnas: error: {command + ': ' if command else ''}{message}\n")


def parser() -> argparse.ArgumentParser:
    from .engine.bench import TRAINING_ENGINES

    p = OneLineParser(prog="budgetnas", description="Architecture search for small CNNs under a parameter budget.")
    p.set_defaults(prepare=lambda args: None)  # commands that name a study resolve it first (add_study_args)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)

    b = sub.add_parser("baseline", help="train a handwritten baseline (exp1..exp4 or all), test every epoch")
    b.add_argument("name", help="exp1..exp4 or all")
    b.add_argument("--seeds", type=at_least(1), default=1, help="number of seeds, 0..N-1, as in verify (default: 1)")
    b.add_argument("--epochs", type=at_least(1), default=None, help="override the recipe's epochs")
    b.add_argument("--jobs", type=at_least(1, MAX_PROCESSES), default=1, help="seeds trained in parallel processes (cores split)")
    b.add_argument("--out", default=None, help="folder for the runs and RESULTS.md (default: studies/baselines)")
    b.add_argument("--markdown-only", action="store_true", help="only regenerate RESULTS.md from stored runs")
    add_data_args(b)
    add_engine_args(b, certify=True)
    b.set_defaults(func=cmd_baseline)

    v = sub.add_parser("verify", help="retrain a module, Arch JSON or baseline on all training images, test each epoch")
    v.add_argument("target", help="an exported .py module, an Arch .json, or a baseline by name (exp1..exp4)")
    v.add_argument("--seeds", type=at_least(1), default=3, help="number of seeds, 0..N-1 (default: 3)")
    v.add_argument("--epochs", type=at_least(1), default=None, help="override the recipe's epochs (<= 15 for the course)")
    v.add_argument("--bar", type=bar_percent, default=None,
                   help="test accuracy (%%) each of the last 3 epochs of every seed must reach; default: the named "
                        "dataset's (mnist: the course's 99.40), else none (no verdict)")
    v.add_argument("--json", default=None, help="write per-seed results and the verdict here")
    v.add_argument("--jobs", type=at_least(1, MAX_PROCESSES), default=1, help="seeds trained in parallel processes (cores split)")
    add_data_args(v)
    add_engine_args(v, certify=True)
    v.set_defaults(func=cmd_verify)

    pa = sub.add_parser("parity", help="does an engine keep accuracy? verify results paired seed by seed")
    pa.add_argument("reference", help="a verify --json result trained the reference way (fp32, eager)")
    pa.add_argument("other", nargs="+", help="verify --json results of the same model and seeds with another engine")
    pa.add_argument("--json", default=None, help="write the paired comparisons here")
    pa.set_defaults(func=cmd_parity)

    s = sub.add_parser("search", help="run (or resume) a study: sample, count, prune, train")
    s.add_argument("--config", default=None, help="study file (TOML with [study] and [space] tables)")
    add_fields(s, StudyConfig, skip=("space",), rename={"name": "study"})
    s.add_argument("--workers", type=at_least(1, MAX_PROCESSES), default=None,
                   help="worker processes on this machine (default: one per core with a journal: or "
                        "postgresql:// storage, one with SQLite)")
    add_data_args(s, dataset=False, data_dir=False)
    add_engine_args(s, certify=False)
    s.set_defaults(func=cmd_search)

    d = sub.add_parser("drill", help="budget -> explore -> narrow -> race -> verify: a verified module, in one run")
    add_fields(d, DrillConfig, required=("name", "budget"))
    add_data_args(d, dataset=False, data_dir=False)
    add_engine_args(d, certify=False)
    d.set_defaults(func=cmd_drill)

    j = sub.add_parser("join", help="more workers for a running drill, from any machine that reaches its storage")
    j.add_argument("--name", required=True, help="the drill's name")
    j.add_argument("--storage", default=None, help="the drill's storage URL, e.g. postgresql://... (default: its "
                   "journal, studies/NAME/drill.journal, on this machine)")
    j.add_argument("--workers", type=at_least(1, MAX_PROCESSES), default=None, help="processes here (default: one per core)")
    add_data_args(j, dataset=False)
    add_engine_args(j, certify=False)
    j.set_defaults(func=cmd_join)

    st = sub.add_parser("status", help="trials by state, best so far, Pareto front, time spent")
    add_study_args(st)
    st.set_defaults(func=cmd_status)

    e = sub.add_parser("export", help="write a trial's model as a standalone module")
    add_study_args(e)
    e.add_argument("--trial", type=at_least(0), default=None, help="trial number (default: best by validation accuracy)")
    e.add_argument("--params-max", type=at_least(1), default=None, help="best trial at or under this many params")
    e.add_argument("--epochs", type=at_least(1), default=None, help="training epochs in the module (default: the study's)")
    e.add_argument("--confirmed", action="store_true",
                   help="the best trial by its mean over the seeds of `budgetnas confirm`")
    e.add_argument("-o", "--output", default="best_model.py",
                   help="FILE.py: a standalone module; FILE.json: the Arch, for a study's warm_from")
    e.set_defaults(func=cmd_export)

    rn = sub.add_parser("render", help="write an Arch JSON (export -o FILE.json, a drill's best.json) as a standalone module")
    rn.add_argument("arch", help="the Arch JSON; NAME.provenance.json beside it, if any, goes into the docstring")
    rn.add_argument("-o", "--output", default=None, help="FILE.py (default: the JSON's path with .py)")
    rn.set_defaults(func=cmd_render)

    c = sub.add_parser("confirm", help="retrain the top trials with more seeds on validation; rank by the mean")
    add_study_args(c)
    c.add_argument("--top", type=at_least(1), default=3, help="how many of the best trials by validation (default 3)")
    c.add_argument("--seeds", type=at_least(1), default=2, help="extra seeds each, in all; reruns train only the missing")
    c.add_argument("--jobs", type=at_least(1, MAX_PROCESSES), default=1, help="trainings in parallel processes (cores split)")
    add_data_args(c, dataset=False)
    add_engine_args(c, certify=False)
    c.set_defaults(func=cmd_confirm)

    r = sub.add_parser("report", help="write the study's lab notebook (Markdown + figures)")
    add_study_args(r)
    r.add_argument("--verify", action="append", default=[],
                   help="verify results JSON, repeatable (default: every verify*.json next to the report)")
    r.add_argument("-o", "--output", default=None, help="default studies/NAME/REPORT.md")
    r.set_defaults(func=cmd_report)

    bn = sub.add_parser("bench", help="training/eval images per second: our engine vs a notebook loop")
    bn.add_argument("--arch", nargs="+", default=["exp4"],
                    help="a baseline by name or an Arch .json (default exp4); with --trainings, one or more")
    bn.add_argument("--images", type=at_least(1), default=10000, help="training images per measurement")
    bn.add_argument("--repeats", type=at_least(1), default=None,
                    help="alternating (reference, ours) pairs; median reported (default 3; --trainings: 1)")
    bn.add_argument("--workers", type=at_least(1, MAX_PROCESSES), nargs="+", default=None,
                    help="instead: summed training img/s of K parallel workers sharing the cores, e.g. 1 2")
    bn.add_argument("--trainings", action="store_true",
                    help="instead: full trainings an hour with each drill stage's engine, one worker a core as the "
                         "drill runs them, beside fp32 eager on one process with every thread (the old way)")
    bn.add_argument("--profile", action="store_true",
                    help="instead: where one search-stage training's time goes, by op (torch's profiler)")
    bn.add_argument("--engines", nargs="+", choices=TRAINING_ENGINES, default=None,
                    help="with --trainings: search (Explore, Narrow, Race), torch-masks (the search engine before fast "
                         "dropout masks), compiled (the search engine before channels last: bf16+compile), verify "
                         "(fp32 eager), old (fp32 eager, 1 process); default all")
    bn.add_argument("--json", default=None, help="write the raw rows here")
    bn.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda: where both loops train")
    add_data_args(bn)
    bn.set_defaults(func=cmd_bench)

    pr = sub.add_parser("pruners", help="replay a study's fully trained trials through each pruner")
    add_study_args(pr)
    pr.add_argument("--bar", type=bar_percent, default=None,
                    help="the accuracy reach-bar judges by (default: none, and reach-bar is median-by-schedule)")
    pr.set_defaults(func=cmd_pruners)

    db = sub.add_parser("dashboard", help="serve optuna-dashboard on a study (loopback only by default)")
    add_study_args(db)
    db.add_argument("--host", default="127.0.0.1",
                    help="bind address (default: 127.0.0.1); anything but loopback is public")
    db.add_argument("--port", type=port_number, default=8080, help="port to listen on (default: 8080)")
    mode = db.add_mutually_exclusive_group()
    mode.add_argument("--allow-notes", action="store_true",
                      help="let the dashboard save study and trial notes, nothing else "
                           "(default: off, read-only)")
    mode.add_argument("--writable", action="store_true",
                      help="let the dashboard change the storage: delete and rename studies, tell trials, "
                           "upload artifacts (default: off, read-only)")
    db.set_defaults(func=cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line a trial replaces Optuna's INFO lines
    args = parser().parse_args(argv)
    set_threads(getattr(args, "threads", None))
    try:
        args.prepare(args)
        args.func(args)
    except BadInput as e:  # the user's to fix: one line
        if os.environ.get("BUDGETNAS_DEBUG"):
            raise
        print(f"budgetnas: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("budgetnas: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
    except OSError as e:  # the machine's, not ours: a full disk, a read-only or vanished folder
        print(f"budgetnas: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 -- ours to fix: say so, keep the traceback
        traceback.print_exc()
        print(f"budgetnas: internal error (a bug in budgetnas, not in your input; please report it with the "
              f"traceback above): {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
