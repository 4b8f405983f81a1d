"""The ``grain-bench leaderboard`` subcommands (parser and handlers); imports no torch.

``show`` prints the comparison, ``export`` writes it as Markdown, LaTeX, CSV or JSON, ``publish`` writes a static
page, ``plot`` the figures, ``samples`` a run's per-example predictions. They only read the results directory; a
corrupt, mixed or missing one is a ``GrainBenchError`` (exit 2). ``upgrade`` brings records of an older schema up to
this grain-bench's, once.
"""

from __future__ import annotations

import sys

from grain_bench.errors import GrainBenchError

#: the help of every ``--format`` (the formats are whatever the registries hold)
FORMAT_HELP = "table format: markdown (default) or another registered one (`grain-bench plugins` lists them)"


def _common(parser, default_results: str) -> None:
    parser.add_argument("--results", default=default_results, help=f"results directory (default: {default_results})")
    parser.add_argument("--task", default=None, help="only this task")
    parser.add_argument("--backbone", default=None, help="only the runs of this backbone (a store may hold several)")
    parser.add_argument("--recipe", default=None, help="only the runs of this recipe (its name: quick, quick+custom)")
    parser.add_argument("--versus", default="auto", metavar="METHOD",
                        help="compare every row with METHOD by a paired 95%% confidence interval of the score "
                             "difference (default: grain when present; none: no comparison)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare records from different grain-bench versions, recipes, backbones or task versions "
                             "as separate setups instead of refusing")


def add_parser(sub, parser_class, default_results: str) -> None:
    """Add ``leaderboard`` and its actions to the CLI's subparsers."""
    board = sub.add_parser("leaderboard", help="tables, plots and a static page from a results directory")
    board_sub = board.add_subparsers(dest="board_command", metavar="ACTION", parser_class=parser_class)
    show = board_sub.add_parser("show", help="print the comparison table")
    _common(show, default_results)
    show.add_argument("--format", default="markdown", help=FORMAT_HELP)
    export = board_sub.add_parser("export", help="write the comparison as Markdown, LaTeX (booktabs), CSV or JSON")
    _common(export, default_results)
    export.add_argument("--format", default="markdown", help=FORMAT_HELP)
    export.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    publish = board_sub.add_parser("publish", help="write a self-contained static leaderboard page (index.html)")
    _common(publish, default_results)
    publish.add_argument("--out", required=True, metavar="SITE", help="output directory for index.html and the plots")
    publish.add_argument("--title", default="grain-bench leaderboard", help="page title")
    plot = board_sub.add_parser("plot", help="write score-vs-density and score-vs-speedup plots (SVG and PNG)")
    _common(plot, default_results)
    plot.add_argument("--out", required=True, metavar="DIR", help="output directory")
    plot.add_argument("--stem", default="leaderboard", help="file name without extension (default: leaderboard)")
    samples = board_sub.add_parser("samples", help="a run's per-example predictions with ids and gold answers")
    samples.add_argument("run_id", metavar="RUN_ID", help="the run (a whole run id or a unique start of one)")
    samples.add_argument("--results", default=default_results, help=f"results directory (default: {default_results})")
    samples.add_argument("--format", default="markdown",
                         help="markdown (default: the first rows), jsonl, csv, or squad (SQuAD's official "
                              "{question id: answer} file)")
    samples.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N examples")
    samples.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    upgrade = board_sub.add_parser("upgrade", help="rewrite the records of an older schema in this grain-bench's, "
                                                   "once (the old file is kept beside)")
    upgrade.add_argument("--results", default=default_results, help=f"results directory (default: {default_results})")


def print_notes(notes: list[str]) -> None:
    """Notes go to stderr, so a table on stdout stays a clean Markdown/CSV/LaTeX/JSON document."""
    for note in notes:
        print(f"grain-bench: note: {note}", file=sys.stderr)


def _versus(args) -> str | None:
    """``--versus``: None for ``none``, ``auto`` as it is, a registered method's alias as its name (``head-pruning``
    -> ``heads``); a name no plugin registers stays (the store may hold a plugin's runs); an empty one is refused."""
    from grain_bench.errors import UsageError
    from grain_bench.plugins import get_registries

    name = args.versus.strip()
    if not name:
        raise UsageError("--versus needs a method name, auto (grain when present) or none; got an empty name")
    if name.lower() == "none":
        return None
    methods = get_registries().methods
    return methods.entry(name).name if name != "auto" and name in methods else name


def _only(args):
    """``--backbone`` and ``--recipe`` as the selection tables take."""
    from grain_bench.leaderboard.tables import Only

    return Only(args.backbone, args.recipe)


def run(args) -> int:
    """Dispatch a leaderboard action."""
    if args.board_command == "show":
        from grain_bench.leaderboard.tables import show_table

        text, notes = show_table(args.results, args.format, task=args.task, allow_mixed=args.allow_mixed,
                                 versus=_versus(args), only=_only(args))
        print(text, end="")
        print_notes(notes)
        return 0
    if args.board_command == "export":
        from grain_bench.leaderboard.tables import export_table

        text, notes = export_table(args.results, args.format, args.out, task=args.task, allow_mixed=args.allow_mixed,
                                   versus=_versus(args), only=_only(args))
        if args.out is None:
            print(text, end="")
        else:
            print(f"grain-bench: wrote {args.out}", file=sys.stderr)
        print_notes(notes)
        return 0
    if args.board_command == "publish":
        from grain_bench.leaderboard.site import publish

        index = publish(args.results, args.out, task=args.task, allow_mixed=args.allow_mixed, title=args.title,
                        versus=_versus(args), only=_only(args))
        print(f"grain-bench: wrote {index} (open it in a browser; no network needed)", file=sys.stderr)
        return 0
    if args.board_command == "plot":
        from grain_bench.leaderboard.plots import write_plots
        from grain_bench.leaderboard.tables import build_report, guard_output

        guard_output(args.out, args.results)
        report = build_report(args.results, args.task, allow_mixed=args.allow_mixed, versus=None, only=_only(args))
        for path in write_plots(report.comparison.table, args.out, args.stem, records=report.records):
            print(path)
        print_notes(report.notes)
        return 0
    if args.board_command == "samples":
        return samples(args)
    if args.board_command == "upgrade":
        return upgrade(args.results)
    raise GrainBenchError("leaderboard needs an action: show, export, publish, plot, samples or upgrade")


def samples(args) -> int:
    """``leaderboard samples``: print or write a run's per-example predictions."""
    from grain_bench.errors import UsageError
    from grain_bench.files import write_atomically
    from grain_bench.leaderboard.samples import render_samples
    from grain_bench.leaderboard.samples import samples as run_samples
    from grain_bench.leaderboard.tables import guard_output

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number of examples; got {args.limit}")
    record, rows = run_samples(args.results, args.run_id)
    text = render_samples(record, rows, args.format, args.limit)
    if args.out is None:
        print(text, end="")
        return 0
    guard_output(args.out, args.results)
    write_atomically(args.out, text.encode("utf-8"))
    print(f"grain-bench: wrote {len(rows) if args.limit is None else min(args.limit, len(rows))} examples of run "
          f"{record.run_id} to {args.out}", file=sys.stderr)
    return 0


def upgrade(results: str) -> int:
    """``leaderboard upgrade``: bring the records of ``results`` to the current schema; says what it did on stderr."""
    import os

    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.migrations import UpgradeContext
    from grain_bench.plugins import get_registries
    from grain_bench.records import SCHEMA_VERSION

    store = RecordStore(results)
    if not os.path.isfile(store.path):
        raise GrainBenchError(f"no records in {results!r} (expected a file {store.path})")
    try:
        result = store.upgrade(UpgradeContext(get_registries()))
    except OSError as exc:
        raise GrainBenchError(f"cannot upgrade {store.path}: {exc.strerror or exc}") from None
    if not result.upgraded:
        print(f"grain-bench: every record of {store.path} is at schema {SCHEMA_VERSION}: nothing to do",
              file=sys.stderr)
    else:
        counts = ", ".join(f"{n} from schema {v}" for v, n in sorted(result.upgraded.items()))
        print(f"grain-bench: upgraded {sum(result.upgraded.values())} record(s) of {store.path} to schema "
              f"{SCHEMA_VERSION} ({counts}); the old file is {result.backup}", file=sys.stderr)
    for problem in result.kept:
        print(f"grain-bench: warning: {store.path} {problem}", file=sys.stderr)
    print_notes(result.notes)
    return 0
