"""The ``grain-bench`` command line. Thin commands: parse, call the library, render.

Every user mistake becomes one line on stderr and exit code 2; ``--help``, ``methods``, ``tasks``, ``plugins`` and
``leaderboard`` do not import torch.
"""

from __future__ import annotations

import argparse
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


def _floats(value: str) -> list[float]:
    try:
        return [float(item) for item in _items(value, "density", "0.05,0.1")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.05,0.1, got {value!r}") from None


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
    from grain_bench.backbones import DEFAULT_BACKBONE
    from grain_bench.harness import DEFAULT_RESULTS

    parser = _Parser(prog="grain-bench", description=__doc__.splitlines()[0],
                     epilog="Run options without a command mean `run`: grain-bench --methods grain,heads --tasks glue")
    parser.add_argument("--version", action="version", version=f"grain-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a grid of methods x tasks x densities x seeds and print the comparison")
    run.add_argument("--methods", type=_names("method", "grain,heads"),
                     default=["dense", "random", "magnitude", "grain", "heads"],
                     help="comma list of methods (default: dense,random,magnitude,grain,heads)")
    run.add_argument("--tasks", type=_names("task", "tweets or glue"), default=["tweets"],
                     help="comma list of tasks or suites, e.g. glue (default: tweets)")
    run.add_argument("--densities", type=_floats, default=[0.2],
                     help="target encoder densities in (0, 1] (default: 0.2)")
    run.add_argument("--seeds", type=_ints, default=[1], help="comma list of seeds (default: 1)")
    run.add_argument("--backbone", default=DEFAULT_BACKBONE,
                     help=f"named backbone, hub id or local path (default: {DEFAULT_BACKBONE})")
    run.add_argument("--recipe", default="demo", help="distillation recipe: demo (default), quick, paper, test")
    run.add_argument("-r", "--recipe-option", action="append", default=[], metavar="KEY=VALUE",
                     help="override one recipe field, e.g. -r max_steps=300 (repeatable)")
    run.add_argument("-o", "--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                     help="method option, e.g. -o grain.alpha=0.3 (repeatable)")
    run.add_argument("--results", default=DEFAULT_RESULTS, help=f"results directory (default: {DEFAULT_RESULTS})")
    run.add_argument("--data-dir", default=None,
                     help="local task files in the task's canonical format (default: hub/package)")
    run.add_argument("--data-revision", action="append", default=[], metavar="[TASK=]REVISION",
                     help="hub data: the branch, tag or commit to load (default: each task's pinned ref, resolved to "
                          "its commit when the grid is planned); TASK may be a suite, e.g. glue=main (repeatable)")
    run.add_argument("--retry-failed", action="store_true", help="re-run specs whose last record is an error")
    run.add_argument("--no-save-models", action="store_true", help="do not write the compact model of each run")
    run.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    run.add_argument("--no-predictions", action="store_true",
                     help="do not store per-example predictions (then no paired confidence intervals)")
    run.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    run.add_argument("--executor", default="local",
                     help="where runs execute: local (default), ray, or a plugin's executor")
    run.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="with --executor ray: the Ray cluster to use (default: start a local Ray instance)")
    run.add_argument("-E", "--executor-option", action="append", default=[], metavar="KEY=VALUE",
                     help="executor option, e.g. -E max_retries=2 or -E cpus_per_run=2 (repeatable)")
    run.add_argument("--format", default="markdown", help="table format: markdown (default), csv, latex, json, or a "
                                                         "plugin's")
    run.add_argument("--versus", default=None, metavar="METHOD",
                     help="compare every row with METHOD by a paired 95%% confidence interval of the score difference "
                          "(default: the first method of --methods; none: no comparison)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    measure = sub.add_parser("measure", help="re-time every run's compact model against its dense backbone, side by "
                                             "side in one process (run it on a quiet machine)")
    measure.add_argument("--results", default=DEFAULT_RESULTS, help=f"results directory (default: {DEFAULT_RESULTS})")
    measure.add_argument("--task", default=None, help="only this task's runs")
    measure.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    measure.add_argument("--seq-len", type=int, default=None, help="sequence length (default: each run's recipe's)")
    measure.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    measure.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    measure.add_argument("--dtype", default="fp32", help="fp32 (default), fp16 or bf16")
    measure.add_argument("--mode", default="eager",
                         help="eager (default); on CPU also compile, aoti, ragged or onnx (grain_bench.runtimes), on "
                              "CUDA cuda_graph or compile")
    measure.add_argument("--runs", type=int, default=15, help="timed rounds (default: 15)")
    measure.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    sub.add_parser("methods", help="list registered methods and their options")
    sub.add_parser("tasks", help="list registered tasks and suites")
    sub.add_parser("plugins", help="list loaded plugins and their versions")

    from grain_bench.leaderboard.commands import add_parser as add_leaderboard_parser

    add_leaderboard_parser(sub, _Parser, DEFAULT_RESULTS)
    return parser


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
    """List plugins."""
    from grain_bench.plugins import get_plugin_manager, plugin_versions

    for name, version in plugin_versions(get_plugin_manager()).items():
        print(f"{name}  {version}")
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
    from grain_bench.measure import CPU_MODES, GPU_MODES
    from grain_bench.runtimes import check_runtime

    modes = GPU_MODES if args.device.startswith("cuda") else CPU_MODES
    if args.mode not in modes:
        raise UsageError(f"--mode {args.mode!r} is not one of {', '.join(modes)} on {args.device!r}")
    if args.mode == "onnx":
        check_runtime(args.mode)  # onnx and onnxruntime installed
    settings = RetimeSettings(batch=args.batch, seq_len=args.seq_len, threads=args.threads, device=args.device,
                              dtype=args.dtype, mode=args.mode, runs=args.runs)
    command = "grain-bench " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["measure"] else "grain-bench measure"
    retime(args.results, settings, task=args.task, progress=not args.quiet, command=command)
    text, notes = show_table(args.results, task=args.task)
    print(text)
    print_notes(notes)
    return 0


def cmd_leaderboard(args) -> int:
    """Leaderboard actions (``grain_bench.leaderboard.commands``)."""
    from grain_bench.leaderboard.commands import run

    return run(args)


def cmd_run(args) -> int:
    """Validate the whole grid, run what is not done yet, print the table; exit 1 if any run failed."""
    from grain_bench.api import prepare_sweep
    from grain_bench.errors import UsageError
    from grain_bench.leaderboard.commands import print_notes
    from grain_bench.leaderboard.tables import show_table
    from grain_bench.options import parse_assignments, parse_key_values
    from grain_bench.plugins import get_registries
    from grain_bench.sweep import SweepTerminated

    regs = get_registries()
    from grain_bench.leaderboard.render import exporter

    writer = exporter(args.format, regs)  # an unknown table format is refused before the sweep, not after it
    executor_options = parse_key_values(args.executor_option, "executor option", "max_retries=2")
    if args.ray_address is not None:
        if args.executor not in regs.executors or regs.executors.entry(args.executor).name != "ray":
            raise UsageError("--ray-address needs --executor ray")
        executor_options["address"] = args.ray_address
    sweep = prepare_sweep(args.methods, args.tasks, args.densities, args.seeds, args.backbone, args.recipe,
                          parse_key_values(args.recipe_option, "recipe option", "max_steps=300"),
                          parse_assignments(args.option), args.results, args.data_dir, args.device, args.executor,
                          executor_options, args.retry_failed, save_models=not args.no_save_models,
                          measure_latency=not args.no_latency, progress=not args.quiet,
                          data_revisions=dict(item.split("=", 1) if "=" in item else ("*", item)
                                              for item in args.data_revision),
                          save_predictions=not args.no_predictions, regs=regs)
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
    versus = regs.resolve_methods(args.methods)[0] if args.versus is None else args.versus
    versus = None if versus.lower() == "none" else versus
    for task in regs.expand_tasks(args.tasks):
        text, notes = show_table(args.results, args.format, task=task, run_ids=sweep.run_ids, versus=versus,
                                 regs=regs)
        print(text, end="" if writer.data_only else "\n")
        print_notes(notes)
    failed = [r for r in records if not r.ok]
    for record in failed:
        print(f"grain-bench: run {record.run_id} failed: {record.error}", file=sys.stderr)
    for run_id, path in store.aside:
        print(f"grain-bench: error: run {run_id} could not be appended to {store.path}; its record is kept in {path} "
              f"and is appended by the next `grain-bench run` with the same --results", file=sys.stderr)
    return 1 if failed or store.aside else 0


COMMANDS = {"run": cmd_run, "measure": cmd_measure, "methods": cmd_methods, "tasks": cmd_tasks, "plugins": cmd_plugins,
            "leaderboard": cmd_leaderboard}


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
