"""Type-check all four folders as the one package they install as (``grain_bench``, with ``methods/``, ``tasks/`` and
``leaderboard/`` mapped into it by pyproject.toml's package-dir, read by ``grain_bench.layout``): build a tree of
symbolic links in ``.mypy-path/`` that mirrors the installed layout, then run mypy on ``grain_bench`` there (mypy has
no notion of a package-dir mapping). Used by ``tox -e type``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from grain_bench.layout import PACKAGE, package_dirs  # noqa: E402


def build_tree(target: str) -> str:
    """``target``/grain_bench: links to every entry of grain_bench/ plus the mapped folders; returns ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    package = os.path.join(target, "grain_bench")
    os.makedirs(package)
    for name in os.listdir(os.path.join(ROOT, "grain_bench")):
        if name != "__pycache__":
            os.symlink(os.path.join(ROOT, "grain_bench", name), os.path.join(package, name))
    for name, folder in package_dirs(ROOT).items():
        if name != PACKAGE:
            os.symlink(os.path.join(ROOT, folder), os.path.join(package, name[len(PACKAGE) + 1:]))
    return target


if __name__ == "__main__":
    tree = build_tree(os.path.join(ROOT, ".mypy-path"))
    command = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"), "-p", "grain_bench"]
    sys.exit(subprocess.call(command, cwd=tree))
