"""Every committed table, rendered: the reference a refactor must reproduce byte for byte.

``render_all(results_dir)`` renders one committed results directory the ways users read it: ``leaderboard show`` in
every built-in format, the static page (its plot images left out: they are matplotlib's, not ours), the Python API's
frame and the re-timing table of ``grain-bench measure``'s records. ``tests/test_golden_tables.py`` compares them with
``tests/data/golden-tables/<dir>/``; after a change that is meant to alter a table, regenerate them with
``GRAIN_BENCH_LOAD_PLUGINS= python tests/golden_tables.py`` and say why in the commit.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden-tables")
#: the committed results directories (each has a records.jsonl)
COMMITTED = ("tweets-minilm", "tweets-minilm-long", "tasks-minilm", "tweets-minilm-cofi", "speed-targets-intel")
FORMATS = {"markdown": "show.md", "csv": "show.csv", "latex": "show.tex", "json": "show.json"}
_IMAGE = re.compile(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+")


def render_all(results_dir: str) -> dict[str, str]:
    """File name -> rendered text of every table of ``results_dir``."""
    from grain_bench.api import load_results
    from grain_bench.leaderboard.site import publish
    from grain_bench.leaderboard.tables import show_table

    out = {}
    for fmt, name in FORMATS.items():
        text, notes = show_table(results_dir, fmt)
        out[name] = text + "".join(f"note: {note}\n" for note in notes)
    with tempfile.TemporaryDirectory() as site:
        index = publish(results_dir, site)
        with open(index, encoding="utf-8") as handle:
            out["page.html"] = _IMAGE.sub("data:image/omitted", handle.read())
        with open(os.path.join(site, "leaderboard.json"), encoding="utf-8") as handle:
            out["leaderboard.json"] = handle.read()
    frame = load_results(results_dir)
    for column in ("artifact", "predictions"):  # absolute paths there: shown relative, as the same on every checkout
        frame[column] = [path if not isinstance(path, str) else os.path.relpath(path, results_dir)
                         for path in frame[column]]
    out["frame.csv"] = frame.to_csv(index=False)
    return out


def main() -> None:
    """Write the golden files of every committed results directory."""
    for name in COMMITTED:
        folder = os.path.join(GOLDEN, name)
        os.makedirs(folder, exist_ok=True)
        for file, text in render_all(os.path.join(RESULTS, name)).items():
            with open(os.path.join(folder, file), "w", encoding="utf-8") as handle:
                handle.write(text)
        print(f"wrote {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
