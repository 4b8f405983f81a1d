"""Small filesystem helpers shared by the writers of the results directory (teacher cache, saved models, per-run
files, model cards)."""

from __future__ import annotations

import gzip
import os
import tempfile

from safetensors import SafetensorError

#: What a full or read-only disk raises while a model is written (safetensors wraps the OS error in its own type).
STORAGE_ERRORS = (OSError, SafetensorError)


def storage_error_text(exc: BaseException) -> str:
    """The short reason of a ``STORAGE_ERRORS`` exception, e.g. "No space left on device"."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.removeprefix("Error while serializing: ")


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
