"""The ``grain-bench leaderboard`` subcommands (parser and handlers); imports no torch."""

from __future__ import annotations

from grain_bench.errors import GrainBenchError


def add_parser(sub, parser_class, default_results: str) -> None:
    """Add ``leaderboard`` and its actions to the CLI's subparsers."""
    board = sub.add_parser("leaderboard", help="tables from a results directory")
    board_sub = board.add_subparsers(dest="board_command", metavar="ACTION", parser_class=parser_class)
    show = board_sub.add_parser("show", help="print the comparison table")
    show.add_argument("--results", default=default_results, help="results directory")
    show.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    show.add_argument("--task", default=None, help="only this task")


def run(args) -> int:
    """Dispatch a leaderboard action."""
    if args.board_command == "show":
        from grain_bench.leaderboard.tables import show_table

        print(show_table(args.results, args.format, task=args.task))
        return 0
    raise GrainBenchError("leaderboard needs an action: show")
