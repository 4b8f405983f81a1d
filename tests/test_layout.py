"""The repository's layout: what the wheel ships, the documented imports, one docstring per module, no import cycles."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomllib
from helpers import ROOT


def test_every_package_folder_is_in_the_wheel():
    """Each folder with an ``__init__.py`` must be listed in pyproject.toml, or a regular install leaves it out
    (``grain_bench.metrics`` once was: every evaluation of a non-editable install failed)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        config = tomllib.load(handle)["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {"grain_bench": "grain_bench", **config["package-dir"]}
    found = set()
    for package, folder in folders.items():
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            if "__init__.py" in files and "__pycache__" not in root:
                relative = os.path.relpath(root, os.path.join(ROOT, folder))
                found.add(package if relative == "." else f"{package}.{relative.replace(os.sep, '.')}")
    assert found <= listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.parametrize("code", [
    "from grain_bench import load_pruned, compact, save_pruned; print(callable(load_pruned) and callable(compact))",
    "import grain_bench; print(callable(grain_bench.compact) and callable(grain_bench.load_pruned))",
    "import grain_bench.compaction, grain_bench; print(callable(grain_bench.compact))",
    "import grain_bench; print(callable(grain_bench.run) and callable(grain_bench.load_results))",
])
def test_documented_imports_work_in_a_fresh_interpreter(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_every_module_states_its_job_and_the_readme_names_it():
    """Each module opens with a docstring; the README's layout table names every module of the four folders."""
    import ast
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        layout = handle.read().split("## Layout", 1)[1]
    named = set(re.findall(r"([a-z_]+\.py)", layout))
    for folder in ("grain_bench", "methods", "tasks", "leaderboard"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py") or name in ("__init__.py", "__main__.py"):
                continue
            with open(os.path.join(ROOT, folder, name), encoding="utf-8") as handle:
                assert ast.get_docstring(ast.parse(handle.read())), f"{folder}/{name} has no docstring"
            assert name in named, f"README's layout table does not name {folder}/{name}"


def test_no_import_cycles_between_modules():
    """No module imports (at any depth, function-level imports included) a module that imports it back."""
    import ast

    roots = {"grain_bench": "grain_bench", "grain_bench.methods": "methods", "grain_bench.tasks": "tasks",
             "grain_bench.leaderboard": "leaderboard"}
    modules = {f"{package}.{name[:-3]}" if name != "__init__.py" else package: os.path.join(ROOT, folder, name)
               for package, folder in roots.items() for name in os.listdir(os.path.join(ROOT, folder))
               if name.endswith(".py")}
    graph = {}
    for module, path in modules.items():
        deps = set()
        with open(path, encoding="utf-8") as handle:
            for node in ast.walk(ast.parse(handle.read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grain_bench"):
                    deps.add(node.module)
                    deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
                elif isinstance(node, ast.Import):
                    deps.update(a.name for a in node.names if a.name in modules)
        graph[module] = {d for d in deps if d in modules and d != module and d != "grain_bench"}

    def reaches(start, goal, seen):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = [m for m in graph if reaches(m, m, {m})]
    assert cycles == [], f"import cycles through {cycles}"
