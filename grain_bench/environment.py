"""Where and with what a run happened: package versions and the machine, stored in every record."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any


def package_versions() -> dict[str, str]:
    """Versions of grain-bench and the libraries that shape its numbers."""
    out = {}
    for dist in ("grain-bench", "torch", "transformers", "datasets", "evaluate", "pluggy", "numpy", "pandas"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    commit = source_commit()
    if commit:
        out["grain-bench-commit"] = commit
    return out


def source_commit() -> str | None:
    """The git commit grain-bench runs from when it runs from a checkout (an editable install), with ``+dirty`` when
    its tracked files differ from it; None for an installed wheel or without git. The version (0.1.0) is the same on
    every commit; this says which one made a record."""
    import subprocess

    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(folder, ".git")):
        return None
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def default_device(requested: str | None = None) -> str:
    """The device runs train and are timed on: ``requested``, else cuda when available, else cpu."""
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def environment(device) -> dict[str, Any]:
    """Where the run happened."""
    import torch

    env = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
           "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(device)}
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``; else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
