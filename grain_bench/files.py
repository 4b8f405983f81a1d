"""Small filesystem helpers shared by the writers of the results directory (teacher cache, saved models, per-run
files, model cards), and ``RunWarnings``: a storage failure on the way costs the file, not the run."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from safetensors import SafetensorError


def sha256_of_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read now (integrity checks must not trust a cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: the environment variable naming grain-bench's own folder for this user
HOME_ENV = "GRAIN_BENCH_HOME"


def grain_bench_home() -> str:
    """grain-bench's own folder for this user (``GRAIN_BENCH_HOME``, else ``$XDG_CACHE_HOME/grain-bench``)."""
    if os.environ.get(HOME_ENV):
        return os.environ[HOME_ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "grain-bench")

T = TypeVar("T")

#: What a full or read-only disk raises while a model is written (safetensors wraps the OS error in its own type).
STORAGE_ERRORS = (OSError, SafetensorError)


def storage_error_text(exc: BaseException) -> str:
    """The short reason of a ``STORAGE_ERRORS`` exception, e.g. "No space left on device"."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.removeprefix("Error while serializing: ")


@dataclass
class RunWarnings:
    """What a reader of a run's ``ok`` record should know (a teacher not cached, a model not saved), collected as the
    run goes and stored in its ``warnings``."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        """Note ``text`` once."""
        if text not in self.items:
            self.items.append(text)

    def extend(self, texts) -> None:
        """Note each of ``texts``."""
        for text in texts:
            self.add(text)

    def store(self, failure: str, write: Callable[[], T]) -> T | None:
        """``write()``'s result; when a full or read-only disk stops it (``STORAGE_ERRORS``), None and the warning
        "``failure`` (the reason)", e.g. "the masks could not be saved (No space left on device)"."""
        try:
            return write()
        except STORAGE_ERRORS as exc:
            self.add(f"{failure} ({storage_error_text(exc)})")
            return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~_umask()


def ordinary_permissions(folder: str) -> None:
    """Give ``folder`` and everything in it the modes of an ordinary ``mkdir``/``open`` (0777 / 0666 minus the umask).

    ``tempfile.mkdtemp`` makes its folder 0700 and safetensors writes its files 0600; a folder built that way and
    renamed into place (a cached teacher, a saved model) would be unreadable to the other users of a shared results
    directory.
    """
    mask = _umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def write_atomically(path: str, data: bytes, compress: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder renamed into place, so a reader never
    sees half a file and a failed write leaves the old one; gzip it (without a timestamp, so equal data gives equal
    bytes) when ``compress``. The file gets an ordinary ``open`` mode. Storage errors propagate."""
    folder = os.path.dirname(path) or "."
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as raw:
            if compress:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
                    out.write(data)
            else:
                raw.write(data)
        os.chmod(tmp, ordinary_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
