"""Type-check all four folders as the one package they install as (``grain_bench``, with ``methods/``, ``tasks/`` and
``leaderboard/`` mapped into it by pyproject.toml's package-dir): build a tree of symbolic links in ``.mypy-path/`` that
mirrors the installed layout, then run mypy on ``grain_bench`` there. Used by ``tox -e type``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPPED = {"methods": "methods", "tasks": "tasks", "leaderboard": "leaderboard"}


def build_tree(target: str) -> str:
    """``target``/grain_bench: links to every entry of grain_bench/ plus the mapped folders; returns ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    package = os.path.join(target, "grain_bench")
    os.makedirs(package)
    for name in os.listdir(os.path.join(ROOT, "grain_bench")):
        if name != "__pycache__":
            os.symlink(os.path.join(ROOT, "grain_bench", name), os.path.join(package, name))
    for name, folder in MAPPED.items():
        os.symlink(os.path.join(ROOT, folder), os.path.join(package, name))
    return target


if __name__ == "__main__":
    tree = build_tree(os.path.join(ROOT, ".mypy-path"))
    command = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"), "-p", "grain_bench"]
    sys.exit(subprocess.call(command, cwd=tree))
