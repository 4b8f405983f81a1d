"""The repository's layout: what the wheel ships, the documented imports, one docstring per module, no import cycles."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomllib
from helpers import ROOT

from grain_bench.layout import package_dirs


def test_every_package_folder_is_in_the_wheel():
    """Each folder that holds files the package ships (modules, kernel sources, metric modules) must be listed in
    pyproject.toml, or a regular install leaves it out (``grain_bench.metrics`` once was: every evaluation of a
    non-editable install failed) and setuptools warns. The folders are found through the one mapping,
    ``grain_bench.layout.package_dirs``."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        listed = set(tomllib.load(handle)["tool"]["setuptools"]["packages"])
    folders = package_dirs(ROOT)
    assert set(folders) == {"grain_bench", "grain_bench.methods", "grain_bench.tasks", "grain_bench.leaderboard"}
    found = set()
    for package, folder in folders.items():
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            if "__pycache__" not in root and any(f.endswith((".py", ".c")) for f in files):
                relative = os.path.relpath(root, os.path.join(ROOT, folder))
                found.add(package if relative == "." else f"{package}.{relative.replace(os.sep, '.')}")
    assert found == listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}; listed but not found: " \
                            f"{sorted(listed - found)}"


def test_a_checkout_imported_directly_finds_its_mapped_folders():
    """Without an editable install's finder (``-S`` skips the .pth that installs it; site-packages is added as a
    plain path), the checkout's ``grain_bench`` still finds methods/, tasks/ and leaderboard/, as pyproject maps them:
    what ``python -m pytest`` from the repository root beside a regular install, or the device script, meets."""
    import sysconfig

    code = (f"import sys; sys.path[:0] = [{ROOT!r}, {sysconfig.get_paths()['purelib']!r}]; "
            "import grain_bench.methods, grain_bench.tasks, grain_bench.leaderboard.store as store; "
            "print(grain_bench.methods.__file__); print(store.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [os.path.join(ROOT, "methods", "__init__.py"),
                                  os.path.join(ROOT, "leaderboard", "store.py")]


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
    for folder in package_dirs(ROOT).values():
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py") or name in ("__init__.py", "__main__.py"):
                continue
            with open(os.path.join(ROOT, folder, name), encoding="utf-8") as handle:
                assert ast.get_docstring(ast.parse(handle.read())), f"{folder}/{name} has no docstring"
            assert name in named, f"README's layout table does not name {folder}/{name}"


def test_no_import_cycles_between_modules():
    """No module imports (at any depth, function-level imports included) a module that imports it back."""
    import ast

    roots = package_dirs(ROOT)
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


#: the longest function the core may have (``grain_bench/``; docstring and signature included)
MAX_FUNCTION_LINES = 40


def test_no_function_of_the_core_is_over_40_lines():
    """Functions of ``grain_bench/`` stay short enough to read in one screen; ruff's C901 (pyproject.toml) bounds
    their branching at 15 everywhere."""
    import ast

    long = []
    for root, _, files in os.walk(os.path.join(ROOT, "grain_bench")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            long += [f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
                     for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"
