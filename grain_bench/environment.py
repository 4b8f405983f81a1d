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
    return out


def environment(device) -> dict[str, Any]:
    """Where the run happened."""
    import torch

    env = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
