"""The ``grain-bench`` command line. Thin commands: parse, call the library, render.

Every user mistake becomes one line on stderr and exit code 2; ``--help``, ``methods``, ``tasks``, ``plugins`` and
``leaderboard`` do not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from grain_bench import __version__
from grain_bench.errors import GrainBenchError

EXIT_USAGE = 2


def _items(value: str, what: str, example: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected at least one {what}, e.g. {example}; got {value!r}")
    if "" in items:
        raise argparse.ArgumentTypeError(f"empty item in {value!r}: separate the values by single commas, "
                                         f"e.g. {example}")
    return items


def _names(what: str, example: str):
    def parse(value: str) -> list[str]:
        return _items(value, what, example)
    return parse


def _numbers(what: str, example: str):
    def parse(value: str) -> list[float]:
        try:
            return [float(item) for item in _items(value, what, example)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as {example}, "
                                             f"got {value!r}") from None
    return parse


_floats = _numbers("density", "0.05,0.1")


def _ints(value: str) -> list[int]:
    try:
        return [int(item) for item in _items(value, "seed", "1,2,3")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,3, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every built-in subcommand (plugins add theirs through ``register_commands``)."""
    from grain_bench.leaderboard.commands import add_parser as add_leaderboard_parser
    from grain_bench.request import DEFAULT_RESULTS

    parser = _Parser(prog="grain-bench", description="A pluggable benchmark for structured pruning of pre-trained "
                                                     "transformer encoders (GRAIN, head pruning, CoFi, baselines).",
                     epilog="Run options without a command mean `run`: grain-bench --methods grain,heads --tasks glue")
    parser.add_argument("--version", action="version", version=f"grain-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run_parser(sub)
    _add_measure_parser(sub, DEFAULT_RESULTS)
    _add_evaluate_parser(sub)
    _add_profile_parser(sub)
    sub.add_parser("methods", help="list registered methods and their options")
    sub.add_parser("tasks", help="list registered tasks and suites")
    sub.add_parser("plugins", help="list loaded plugins and their versions")
    add_leaderboard_parser(sub, _Parser, DEFAULT_RESULTS)
    return parser


#: a ``run`` flag that is not given leaves its ``SweepRequest`` field out, so the request's declared default applies
_UNSET = argparse.SUPPRESS


def _add_run_parser(sub) -> None:
    """``run``: one flag per ``SweepRequest`` choice (help texts read the request's defaults), plus how to print."""
    run = sub.add_parser("run", help="run a grid of methods x tasks x densities x seeds and print the comparison")
    _add_grid_flags(run)
    _add_execution_flags(run)
    _add_output_flags(run)


def _add_grid_flags(run) -> None:
    """What the grid is: methods, tasks, densities, seeds, backbone, recipe, options, data."""
    from grain_bench.request import help_text

    run.add_argument("--methods", type=_names("method", "grain,heads"), default=_UNSET, help=help_text("methods"))
    run.add_argument("--tasks", type=_names("task", "tweets or glue"), default=_UNSET, help=help_text("tasks"))
    run.add_argument("--densities", type=_floats, default=_UNSET,
                     help=help_text("densities", "0.2, or none when --target-speedup is given"))
    run.add_argument("--target-speedup", dest="target_speedups", type=_numbers("speedup", "4,8,12"), default=_UNSET,
                     metavar="X[,X...]", help=help_text("target_speedups", "none") + "; with score-and-cut methods")
    run.add_argument("--cost-model", dest="cost_model", default=_UNSET, metavar="PATH|flops|params",
                     help=help_text("cost_model", "the device's cached one, profiled on first use") + "; flops: the "
                     "FLOPs at the runs' length (a FLOPs ratio 1/X, Kwon et al.'s constraint), params: the density")
    run.add_argument("--seeds", type=_ints, default=_UNSET, help=help_text("seeds"))
    run.add_argument("--backbone", default=_UNSET, help=help_text("backbone"))
    run.add_argument("--recipe", default=_UNSET, help=help_text("recipe"))
    run.add_argument("-r", "--recipe-option", action="append", default=[], metavar="KEY=VALUE",
                     help="override one recipe field, e.g. -r max_steps=300 (repeatable)")
    run.add_argument("-o", "--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                     help="method option, e.g. -o grain.alpha=0.3 (repeatable)")
    run.add_argument("--data-dir", dest="data_dir", default=_UNSET, help=help_text("data_dir", "hub/package"))
    run.add_argument("--data-revision", action="append", default=[], metavar="[TASK=]REVISION",
                     help="hub data: the branch, tag or commit to load (default: each task's pinned ref, resolved to "
                          "its commit when the grid is planned); TASK may be a suite, e.g. glue=main (repeatable)")


def _add_execution_flags(run) -> None:
    """Where results go, what each run saves and times, and where runs execute."""
    from grain_bench.request import help_text

    run.add_argument("--results", default=_UNSET, help=help_text("results"))
    run.add_argument("--teacher-cache", dest="teacher_cache", metavar="FOLDER", default=_UNSET,
                     help=help_text("teacher_cache", "GRAIN_BENCH_HOME/teachers, one per user"))
    run.add_argument("--retry-failed", dest="retry_failed", action="store_true", default=_UNSET,
                     help="re-run specs whose last record is an error")
    run.add_argument("--rerun", action="store_true", default=_UNSET,
                     help="re-run every spec of the grid, recorded ones too: each new record supersedes the earlier "
                          "one in every table (the store keeps both)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the grid with what each run would do and its estimated compute on this machine "
                          "(from the rates earlier runs measured here), then stop: nothing trains or is written")
    run.add_argument("--no-save-models", dest="save_models", action="store_false", default=_UNSET,
                     help="do not write the compact model of each run")
    run.add_argument("--no-latency", dest="measure_latency", action="store_false", default=_UNSET,
                     help="skip latency measurement")
    run.add_argument("--no-predictions", dest="save_predictions", action="store_false", default=_UNSET,
                     help="do not store per-example predictions (then no paired confidence intervals)")
    run.add_argument("--device", default=_UNSET, help=help_text("device", "cuda when available, else cpu"))
    run.add_argument("--executor", default=_UNSET, help=help_text("executor"))
    run.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="with --executor ray: the Ray cluster to use (default: start a local Ray instance)")
    run.add_argument("-E", "--executor-option", action="append", default=[], metavar="KEY=VALUE",
                     help="executor option, e.g. -E max_retries=2 or -E cpus_per_run=2 (repeatable)")


def _add_output_flags(run) -> None:
    """How the closing table is printed."""
    from grain_bench.leaderboard.commands import FORMAT_HELP

    run.add_argument("--format", default="markdown", help=FORMAT_HELP)
    run.add_argument("--versus", default=None, metavar="METHOD",
                     help="compare every row with METHOD by a paired 95%% confidence interval of the score difference "
                          "(default: grain when in --methods, as leaderboard does, else the first method; none: no "
                          "comparison)")
    run.add_argument("-q", "--quiet", dest="progress", action="store_false", default=_UNSET, help="no progress bars")


def _add_measure_parser(sub, default_results: str) -> None:
    """``measure``: re-time a results directory's runs (defaults from ``RetimeSettings``)."""
    from grain_bench.retime import RetimeSettings

    defaults = RetimeSettings()
    measure = sub.add_parser("measure", help="re-time every run's compact model against its dense backbone, side by "
                                             "side in one process (run it on a quiet machine)")
    measure.add_argument("--results", default=default_results, help=f"results directory (default: {default_results})")
    measure.add_argument("--task", default=None, help="only this task's runs")
    measure.add_argument("--methods", default=None, type=lambda text: [m for m in text.split(",") if m],
                         help="only these methods' runs (comma-separated; default: every run)")
    measure.add_argument("--batch", type=int, default=defaults.batch, help=f"batch size (default: {defaults.batch})")
    measure.add_argument("--seq-len", type=int, default=None, help="sequence length (default: each run's recipe's)")
    measure.add_argument("--threads", type=int, default=defaults.threads,
                         help=f"CPU threads (default: {defaults.threads})")
    measure.add_argument("--device", default=defaults.device, help=f"cpu or cuda[:N] (default: {defaults.device})")
    measure.add_argument("--dtype", default=defaults.dtype, help=f"fp32, fp16 or bf16 (default: {defaults.dtype})")
    measure.add_argument("--mode", default=defaults.mode,
                         help=f"inference runtime: {defaults.mode} (default), another registered one of the device "
                              f"(`grain-bench plugins` lists them with their devices) or best (each model under its "
                              f"fastest correct one of eager and ragged on CPU, eager and cuda_graph on CUDA)")
    measure.add_argument("--runs", type=int, default=defaults.runs, help=f"timed rounds (default: {defaults.runs})")
    measure.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_evaluate_parser(sub) -> None:
    """``evaluate``: score a model the suite did not train on tasks (``grain_bench.evaluation``)."""
    from grain_bench.evaluation import DEFAULT_RESULTS

    evaluate = sub.add_parser("evaluate", help="score a saved compact model, a checkpoint folder or a hub model on "
                                               "tasks, with the same adapters and metrics, and record it")
    evaluate.add_argument("--model", required=True, metavar="PATH_OR_HUB_ID",
                          help="a compact model grain-bench saved (RESULTS/models/RUN_ID), a checkpoint folder or a "
                               "hub id of the task head's class")
    evaluate.add_argument("--tasks", default="tweets", help="comma-separated tasks or suites (default: tweets)")
    evaluate.add_argument("--data-dir", default=None, help="folder of the task's files (as for run)")
    evaluate.add_argument("--recipe", default="quick",
                          help="the recipe whose length, scored-example limit and eval batch apply (default: quick)")
    evaluate.add_argument("--results", default=DEFAULT_RESULTS,
                          help=f"results directory the evaluations are recorded in (default: {DEFAULT_RESULTS})")
    evaluate.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    evaluate.add_argument("--no-latency", dest="measure_latency", action="store_false", help="do not time it")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def cmd_evaluate(args) -> int:
    """Score ``--model`` on ``--tasks``; print each task's scores and where they were recorded."""
    from grain_bench.evaluation import evaluate

    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    frame = evaluate(args.model, tasks, data_dir=args.data_dir, recipe=args.recipe, results=args.results,
                     device=args.device, measure_latency=args.measure_latency, progress=not args.quiet)
    for row in frame.itertuples():
        if row.status != "ok":
            print(f"grain-bench: error: {row.task}: {row.error}", file=sys.stderr)
            continue
        print(f"{row.task}: {row.metric} {row.score:.4f} (run {row.run_id}, recorded in {args.results}; "
              f"grain-bench leaderboard samples {row.run_id[:8]} --results {args.results} shows its examples)")
    return 1 if (frame["status"] != "ok").any() else 0


def _add_profile_parser(sub) -> None:
    """``profile``: fit a backbone's latency cost model on one device (defaults from ``ProfileSettings``)."""
    from grain_bench.backbones import DEFAULT_BACKBONE
    from grain_bench.profile import ProfileSettings

    defaults = ProfileSettings()
    profile = sub.add_parser("profile", help="time compact encoders of many shapes beside the dense one and fit the "
                                             "latency cost model --target-speedup prunes with (a quiet machine)")
    profile.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone (default: {DEFAULT_BACKBONE})")
    profile.add_argument("--device", default=defaults.device, help=f"cpu or cuda[:N] (default: {defaults.device})")
    profile.add_argument("--runtime", default=defaults.runtime,
                         help=f"inference runtime to time (default: {defaults.runtime}; `grain-bench plugins` lists "
                              f"them)")
    for name, what in (("batch", "batch size"), ("seq_len", "sequence length"), ("threads", "CPU threads"),
                       ("shapes", "compact shapes to time"), ("held_out", "shapes held out of the fit"),
                       ("runs", "timed rounds"), ("calls", "CPU calls per round")):
        profile.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=getattr(defaults, name),
                             help=f"{what} (default: {getattr(defaults, name)})")
    profile.add_argument("--out", default=None, metavar="PATH",
                         help="where to write the cost model (default: the user's cache, where runs find it)")
    profile.add_argument("--check-masks", action="append", default=[], metavar="RESULTS",
                         help="also report the error on every stored mask of a results directory (repeatable)")
    profile.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_plugin_commands(parser: argparse.ArgumentParser) -> None:
    from grain_bench.plugins import get_plugin_manager

    table = parser._subparsers
    for action in table._group_actions if table is not None else []:  # the subcommand table
        if isinstance(action, argparse._SubParsersAction):
            get_plugin_manager().hook.register_commands(cli=action)


def cmd_methods(args) -> int:
    """List methods."""
    from grain_bench.plugins import get_registries

    regs = get_registries()
    for entry in regs.methods.entries.values():
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"{entry.name}{aliases} [{entry.plugin}]\n    {entry.description}")
        ranges = entry.obj.Options.ranges()
        for name, type_name, default in entry.obj.Options.describe():
            valid = f"  valid: {ranges[name]}" if name in ranges else ""
            print(f"    -o {entry.name}.{name}=<{type_name}>  (default: {default}){valid}")
    return 0


def cmd_tasks(args) -> int:
    """List tasks and suites."""
    from grain_bench.plugins import get_registries

    regs = get_registries()
    for entry in regs.tasks.entries.values():
        cls = entry.obj
        suites = f" suites: {', '.join(entry.suites)};" if entry.suites else ""
        print(f"{entry.name} v{cls.version} [{cls.head}]{suites} metrics: {', '.join(cls.metrics)} "
              f"(primary: {cls.primary_metric})\n    {entry.description}")
    for suite, names in regs.suites().items():
        print(f"suite {suite}: {', '.join(names)}")
    return 0


def cmd_plugins(args) -> int:
    """List plugins, then what they registered besides methods and tasks (``grain-bench methods``, ``tasks``)."""
    from grain_bench.plugins import get_plugin_manager, get_registries, plugin_versions

    for name, version in plugin_versions(get_plugin_manager()).items():
        print(f"{name}  {version}")
    regs = get_registries()
    for kind in ("backbones", "executors", "exporters", "runtimes"):
        print(f"\n{'table formats' if kind == 'exporters' else kind}:")
        for entry in getattr(regs, kind).entries.values():
            devices = f" (on {', '.join(entry.obj.devices)})" if kind == "runtimes" else ""
            print(f"  {entry.name}{devices} [{entry.plugin}]: {entry.description}")
    return 0


def cmd_measure(args) -> int:
    """Re-time the runs of a results directory (``grain_bench.retime``) and print the leaderboard it feeds."""
    from grain_bench.errors import UsageError
    from grain_bench.leaderboard.commands import print_notes
    from grain_bench.leaderboard.tables import show_table
    from grain_bench.preflight import check_device
    from grain_bench.retime import RetimeSettings, retime

    for name in ("batch", "threads", "runs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.seq_len is not None and args.seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, got {args.seq_len}")
    check_device(args.device)
    from grain_bench.plugins import get_registries
    from grain_bench.runtimes import get_runtime

    regs = get_registries()
    if args.mode != "best":  # best: every usable candidate of the device (grain_bench.measure.BEST_CANDIDATES)
        get_runtime(args.mode, args.device, regs, what="--mode").check()  # a runtime of that device, what it needs
    settings = RetimeSettings(batch=args.batch, seq_len=args.seq_len, threads=args.threads, device=args.device,
                              dtype=args.dtype, mode=args.mode, runs=args.runs)
    command = "grain-bench " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["measure"] else "grain-bench measure"
    outcome = retime(args.results, settings, task=args.task, progress=not args.quiet, command=command, regs=regs,
                     methods=args.methods)
    text, notes = show_table(args.results, task=outcome.task, regs=regs)
    print(text)
    print_notes(notes)
    for failure in outcome.failures:
        print(f"grain-bench: error: {failure}", file=sys.stderr)
    return 1 if outcome.failures else 0


def cmd_profile(args) -> int:
    """Fit and write a latency cost model (``grain_bench.profile``); print its coefficients and its errors."""
    from grain_bench.costs import save_cost_model
    from grain_bench.plugins import get_registries
    from grain_bench.preflight import check_device, check_home
    from grain_bench.profile import ProfileSettings, cached_path, profile, real_masks, report
    from grain_bench.runtimes import get_runtime

    settings = ProfileSettings(device=args.device, runtime=args.runtime, batch=args.batch, seq_len=args.seq_len,
                               threads=args.threads, shapes=args.shapes, held_out=args.held_out, runs=args.runs,
                               calls=args.calls)
    settings.check()
    check_device(args.device)
    if args.out is None:
        check_home()  # where the model goes, checked before minutes of timing
    regs = get_registries()
    get_runtime(args.runtime, args.device, regs, what="--runtime").check()
    check = {label: masks for folder in args.check_masks for label, masks in real_masks(folder).items()}
    model = profile(args.backbone, settings, regs, progress=not args.quiet, check=check)
    path = save_cost_model(model, args.out or cached_path(args.backbone, settings))
    print(report(model, path))
    return 0


def cmd_leaderboard(args) -> int:
    """Leaderboard actions (``grain_bench.leaderboard.commands``)."""
    from grain_bench.leaderboard.commands import run

    return run(args)


def request_from_args(args):
    """The ``SweepRequest`` of a parsed ``run`` command line: only the choices given, by name; the rest keep the
    request's declared defaults."""
    from grain_bench.options import parse_assignments, parse_key_values
    from grain_bench.request import SweepRequest

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SweepRequest) if hasattr(args, f.name)}
    given["recipe_options"] = parse_key_values(args.recipe_option, "recipe option", "max_steps=300")
    given["method_options"] = parse_assignments(args.option)
    given["executor_options"] = parse_key_values(args.executor_option, "executor option", "max_retries=2")
    given["data_revisions"] = dict(item.split("=", 1) if "=" in item else ("*", item) for item in args.data_revision)
    if args.ray_address is not None:
        given["executor_options"]["address"] = args.ray_address
    return SweepRequest.parse(given)


def cmd_run(args) -> int:
    """Validate the whole grid, run what is not done yet, print the table; exit 1 if any run failed."""
    from grain_bench.api import prepare_sweep
    from grain_bench.errors import UsageError
    from grain_bench.leaderboard.render import exporter
    from grain_bench.plugins import get_registries
    from grain_bench.sweep import SweepTerminated

    regs = get_registries()
    writer = exporter(args.format, regs)  # an unknown table format is refused before the sweep, not after it
    request = request_from_args(args)
    if args.ray_address is not None and (request.executor not in regs.executors
                                         or regs.executors.entry(request.executor).name != "ray"):
        raise UsageError("--ray-address needs --executor ray")
    versus = _checked_versus(args.versus, request, regs)  # before anything runs, not after the whole grid
    if args.dry_run:
        return _dry_run(prepare_sweep(request, regs=regs, dry_run=True))
    sweep = prepare_sweep(request, regs=regs)
    store = sweep.store
    if sweep.recovered:
        print(f"grain-bench: appended {sweep.recovered} record(s) that an earlier run had to keep aside",
              file=sys.stderr)
    print(f"grain-bench: {sweep.status()}", file=sys.stderr)
    try:
        records = sweep.execute()
    except SweepTerminated as exc:
        print(f"grain-bench: {exc}; finished runs are stored in {store.path}, run the same command to resume",
              file=sys.stderr)
        return 128 + exc.signum
    _print_tables(args, sweep, regs, writer, versus)
    return _closing(records, store)


def _dry_run(sweep) -> int:
    """``run --dry-run``: the grid, each run's state and estimated cost, and the total; nothing run or written."""
    from grain_bench.estimate import machine_key, report

    print(f"grain-bench: {sweep.status()}", file=sys.stderr)
    print(report(sweep.estimates(), machine_key(sweep.harness.device)), end="")
    return 0


def _checked_versus(name: str | None, request, regs) -> str | None:
    """``--versus`` as the closing tables use it: the canonical name of one of ``--methods`` (aliases resolved,
    unknown names refused with a did-you-mean), None for ``none``; when not given ``grain`` if it is in the grid (as
    ``leaderboard`` chooses), else the first method."""
    from grain_bench.errors import UsageError

    methods = regs.resolve_methods(request.methods)  # unknown methods: the same error the grid would raise
    if name is None:  # the leaderboard's rule (grain when present), then the grid's first method
        return "grain" if "grain" in methods else (methods[0] if methods else None)
    if name.strip().lower() == "none":
        return None
    if not name.strip():
        raise UsageError(f"--versus needs a method of --methods ({', '.join(methods)}) or none; got {name!r}")
    canonical = regs.methods.entry(name.strip()).name
    if canonical not in methods:
        raise UsageError(f"--versus {name}: method {canonical!r} is not in --methods ({', '.join(methods)}), so the "
                         f"table has no row to compare with; add it to --methods, or choose one of them, or none")
    return canonical


def _print_tables(args, sweep, regs, writer, versus: str | None) -> None:
    """The closing comparison of each task of the sweep, compared with ``versus``; none when nothing is stored yet
    (every record had to be kept aside: ``_closing`` says where)."""
    import os

    from grain_bench.leaderboard.commands import print_notes
    from grain_bench.leaderboard.tables import show_table

    request = sweep.request
    if not os.path.isfile(sweep.store.path):
        return
    for task in regs.expand_tasks(request.tasks):
        text, notes = show_table(request.results, args.format, task=task, run_ids=sweep.run_ids, versus=versus,
                                 regs=regs)
        print(text, end="" if writer.data_only else "\n")
        print_notes(notes)


def _closing(records, store) -> int:
    """Say which runs failed and which records wait aside; 1 when any did, else 0."""
    failed = [r for r in records if not r.ok]
    for record in failed:
        print(f"grain-bench: run {record.run_id} failed: {record.error}", file=sys.stderr)
    for run_id, path in store.aside:
        print(f"grain-bench: error: run {run_id} could not be appended to {store.path}; its record is kept in {path} "
              f"and is appended by the next `grain-bench run` with the same --results", file=sys.stderr)
    return 1 if failed or store.aside else 0


COMMANDS = {"run": cmd_run, "measure": cmd_measure, "evaluate": cmd_evaluate, "profile": cmd_profile,
            "methods": cmd_methods, "tasks": cmd_tasks, "plugins": cmd_plugins, "leaderboard": cmd_leaderboard}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grain-bench`` console script."""
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
            argv = ["run", *argv]  # `grain-bench --methods grain,heads --tasks glue` is `grain-bench run ...`
        if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
            _add_plugin_commands(parser)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2, message already printed)
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
        if handler is None:
            parser.error(f"command {args.command!r} has no handler")
        return int(handler(args) or 0)
    except GrainBenchError as exc:
        print(f"grain-bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `grain-bench methods | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("grain-bench: interrupted; finished runs are stored, run the same command to resume", file=sys.stderr)
        return 130
