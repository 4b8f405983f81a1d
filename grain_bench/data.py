"""What a task's data is and where it comes from: ``DataIdentity`` (a content hash of the local files read, or a hub
dataset at a resolved commit), the file hashes behind it, and the hub probing that makes an offline machine fail in
seconds instead of retrying for minutes (``hub_offline``, ``hub_reachable``, ``resolve_hub_revision``,
``load_hub_dataset``). Task adapters (``grain_bench.task``) use these; run ids and teacher-cache keys store the
identity's ``key``. This module imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import DataError

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` asks for offline mode."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds instead of retrying for minutes."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: content hashes of files already read in this process: (path, size, mtime) -> sha256
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and modification time)."""
    from grain_bench.files import sha256_of_file

    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_of_file(path)
    return _FILE_HASHES[key]


@dataclass(frozen=True)
class DataIdentity:
    """What a task's data is, for run ids and teacher-cache keys: a content hash of the local files it reads (the
    same bytes reached through two paths are one identity; an edited file is another), or a hub dataset at a
    resolved commit. ``key`` is what specs store; the rest goes into records as provenance."""

    key: str  # "sha256:<16 hex>" or "hub:<repo>@<commit>"
    source: str  # the folder, file or hub repository it was read from
    revision: str | None = None  # hub commit
    files: dict[str, str] = field(default_factory=dict)  # role (e.g. "train") -> sha256 of that file

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"key": self.key, "source": self.source, "revision": self.revision, "files": dict(self.files)}

    @classmethod
    def of_files(cls, files: dict[str, str], source: str) -> DataIdentity:
        """The identity of local files given as role -> path (roles, not paths, go into the hash)."""
        import hashlib

        missing = [path for path in files.values() if not os.path.isfile(path)]
        if missing:  # every missing file at once, not one per attempt
            named = missing[0] if len(missing) == 1 else f"{len(missing)} data files not found: {', '.join(missing)}"
            raise DataError(f"{named}{' not found' if len(missing) == 1 else ''} (data files expected under {source})")
        hashes = {role: file_sha256(path) for role, path in sorted(files.items())}
        digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
        return cls(f"sha256:{digest}", source, None, hashes)


def is_identity(data: str) -> bool:
    """True for a spec's ``data`` value written by this version (older ones hold a path or ``default``)."""
    return data.startswith(("sha256:", "hub:"))


def hub_cache_dir() -> str:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def resolve_hub_revision(task: str, repo: str, ref: str) -> str:
    """The commit that ``ref`` (a branch, tag or commit) of hub dataset ``repo`` names now: asked from the hub, or,
    offline, read from the local hub cache. Raises ``DataError`` when neither can say."""
    if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):
        return ref  # already a commit
    hint = "point --data-dir at local files in the task's canonical format (see docs/tasks.md)"
    if hub_offline() or not hub_reachable():
        cached = os.path.join(hub_cache_dir(), f"datasets--{repo.replace('/', '--')}", "refs", ref)
        if os.path.isfile(cached):
            with open(cached) as handle:
                return handle.read().strip()
        why = "offline mode is on" if hub_offline() else "the hub is unreachable"
        raise DataError(f"{task}: {why} and the hub cache has no copy of {repo} ({ref}); {hint}, or run once online")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(repo, revision=ref).sha
        if not sha:
            raise ValueError(f"the hub gave no commit for {repo}@{ref}")
        return sha
    except Exception as exc:  # a bad id, a private repository, a network error: one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{task}: could not resolve {repo}@{ref} on the hub: {first}; {hint}") from None


def load_hub_dataset(task: str, path: str, config: str | None = None, **kwargs):
    """``datasets.load_dataset(path, config)`` that fails fast and clearly when the hub cannot be used.

    In offline mode only the local ``datasets`` cache is tried (it fails at once when the data is not cached); online,
    an unreachable hub is detected by a short probe before ``datasets`` would retry for minutes.
    """
    import datasets

    where = f"{path}" + (f" ({config})" if config else "")
    hint = "point --data-dir at local files in the task's canonical format (see docs/tasks.md)"
    if not hub_offline() and not hub_reachable():
        raise DataError(f"{task}: the Hugging Face hub is unreachable, so {where} cannot be downloaded; {hint}, "
                        f"or set HF_DATASETS_OFFLINE=1 to use a cached copy")
    try:
        return datasets.load_dataset(path, config, **kwargs)
    except Exception as exc:  # network, offline mode, missing cache, bad id: one clear message
        mode = " (offline mode is on: only cached datasets load)" if hub_offline() else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{task}: could not load {where} from the hub{mode}: {first}; {hint}") from None
