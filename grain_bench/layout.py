"""The package's folders: ``grain_bench.methods``, ``.tasks`` and ``.leaderboard`` live in top-level folders of the
repository, mapped into the package by pyproject.toml's ``[tool.setuptools.package-dir]``, the one place the mapping
is declared. ``package_dirs`` reads it; the type check, the tests and the device script use it from here.

An installed wheel has the folders inside the package and needs nothing. A source checkout imported directly (``python
-m pytest`` from the repository root shadows a regular install with the checkout's ``grain_bench/``) has them beside
it: ``map_checkout_folders`` then lets the import system find each mapped package in its folder.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys

PACKAGE = "grain_bench"
#: the repository root when this module is imported from a source checkout (a pyproject.toml beside ``grain_bench/``)
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TABLE = re.compile(r"^\[tool\.setuptools\.package-dir\]\s*$(.*?)(?=^\[|\Z)", re.M | re.S)
_ENTRY = re.compile(r'^\s*"([\w.]+)"\s*=\s*"([^"]+)"', re.M)


def package_dirs(root: str = CHECKOUT) -> dict[str, str]:
    """Package name -> folder (relative to ``root``) of every package pyproject.toml maps, ``grain_bench`` included;
    {} when ``root`` has no pyproject.toml (an installed wheel). Read with a pattern for this one table, so that it
    needs no TOML parser on Python 3.10."""
    path = os.path.join(root, "pyproject.toml")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        table = _TABLE.search(handle.read())
    return dict(_ENTRY.findall(table.group(1))) if table else {}


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the mapped packages (and nothing else) in their checkout folders."""

    def __init__(self, folders: dict[str, str]):
        self.folders = folders

    def find_spec(self, fullname, path=None, target=None):
        """The spec of a mapped package from its folder's ``__init__.py``; None for every other name."""
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(fullname, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])


def map_checkout_folders(root: str = CHECKOUT) -> None:
    """In a source checkout, make the mapped packages importable from their folders (after every other finder, so an
    editable install's own finder keeps precedence); does nothing for an installed wheel or when done already."""
    folders = {name: os.path.join(root, folder) for name, folder in package_dirs(root).items()
               if name != PACKAGE and os.path.isfile(os.path.join(root, folder, "__init__.py"))}
    if folders and not any(isinstance(finder, _CheckoutFinder) for finder in sys.meta_path):
        sys.meta_path.append(_CheckoutFinder(folders))
