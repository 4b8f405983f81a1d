"""The ragged kernel's build cache: where compiled kernels live (``$GRAIN_BENCH_KERNEL_CACHE``, else
``~/.cache/grain-bench/kernels``), how one is built and when a cached one is trusted.

A kernel is built with the system's C compiler (``$CC``, else ``cc``) into a temporary folder inside the cache,
self-tested in a child process (``grain_bench/kernel_selftest.py``: it loads the kernel and checks one attention call
against a pure-Python reference) and only then renamed into place, beside a record of its SHA-256. A cached kernel is
loaded only when its bytes match that record (a kernel from before the records is self-tested in a child once and
then recorded); one that does not is moved aside (``*.bad-<time>``), with one line on stderr, and built again. So a
truncated or damaged file never crashes the caller (SIGBUS, SIGILL), a "compiler" that writes something that is not
a working kernel caches nothing, and a cached kernel needs no compiler. Its name hashes the source, the flags, the
compiler's name and the CPU. ``check_kernel_cache_setting`` checks the folder's setting without building.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources

from grain_bench.errors import GrainBenchError, UsageError

SOURCE = "ragged_attention.c"
#: the environment variable naming the cache folder
CACHE_ENV = "GRAIN_BENCH_KERNEL_CACHE"
#: (``-march=native``, ``-fopenmp``) in the order tried: not every compiler knows them (Apple's clang has no OpenMP;
#: without it the kernel runs on one thread)
VARIANTS = ((True, True), (False, True), (False, False))
#: a self-test takes milliseconds; a child still running after this long is stuck
SELF_TEST_TIMEOUT = 60.0
_RECORD = ".sha256"


def default_cache_dir() -> str:
    """The cache folder when ``GRAIN_BENCH_KERNEL_CACHE`` is unset or empty."""
    return os.path.join(os.path.expanduser("~"), ".cache", "grain-bench", "kernels")


def _where(folder: str) -> str:
    value = os.environ.get(CACHE_ENV)
    return f"{CACHE_ENV}={value!r}" if value else f"the ragged kernel's cache folder {folder} ({CACHE_ENV} unset)"


def _not_a_folder(folder: str) -> str | None:
    """The first of ``folder`` and the folders above it that exists and is not a folder, or None."""
    path = folder
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path


def cache_dir() -> str:
    """The cache folder (``GRAIN_BENCH_KERNEL_CACHE`` with ``~`` expanded; unset or empty: ``default_cache_dir()``),
    refused with a one-line ``UsageError`` when it cannot be a folder: a relative path, something other than a folder
    where it or a folder above it should be, or a filesystem mounted noexec."""
    value = os.environ.get(CACHE_ENV, "")
    fix = f"set {CACHE_ENV} to an absolute folder path, or unset it for {default_cache_dir()}"
    folder = os.path.expanduser(value) if value else default_cache_dir()
    if not os.path.isabs(folder):
        raise UsageError(f"{CACHE_ENV}={value!r} is not an absolute path: {fix}")
    blocker = _not_a_folder(folder)
    if blocker is not None:
        raise UsageError(f"{_where(folder)}: {blocker} is not a folder (a file is in the way): move it, or {fix}")
    if os.statvfs(_existing(folder)).f_flag & getattr(os, "ST_NOEXEC", 0):  # glibc systems only
        raise UsageError(f"{_where(folder)} is on a filesystem mounted noexec, where no kernel can be loaded from: "
                         f"{fix}")
    return folder


def _existing(folder: str) -> str:
    """``folder``, or when it does not exist yet the folder above it it would be made in."""
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def _not_writable(folder: str) -> str | None:
    """Why ``folder`` (or, when it does not exist yet, the folder it would be made in) cannot be written, or None."""
    existing = _existing(folder)
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    return "read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "permission denied"


def check_kernel_cache_setting(need_kernel: bool = True) -> str:
    """The ragged kernel's cache folder, checked without building anything (a sweep's preflight calls it): the form
    of ``GRAIN_BENCH_KERNEL_CACHE`` (``cache_dir``), and with ``need_kernel`` (the ragged runtime will run) a folder
    that can be written or already holds a kernel built for this machine. A one-line ``UsageError`` otherwise."""
    folder = cache_dir()
    if not need_kernel:
        return folder
    reason = _not_writable(folder)
    if reason is not None and not any(os.path.isfile(path) for _, path in candidates(folder)):
        raise UsageError(f"{_where(folder)} is not writable ({reason}) and holds no kernel built for this machine: "
                         f"make it writable, or set {CACHE_ENV} to a writable folder")
    return folder


def _compiler_name() -> str:
    return os.environ.get("CC") or "cc"


def _compiler() -> str:
    path = shutil.which(_compiler_name())
    if path is None:
        raise GrainBenchError(f"the ragged runtime needs a C compiler to build its kernel: {_compiler_name()!r} was "
                              f"not found (set CC to one, or use another runtime)")
    return path


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _flags(native: bool, openmp: bool = True) -> list[str]:
    flags = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=fast", "-std=gnu11"]
    if openmp:
        flags.append("-fopenmp")
    if native:
        flags.append("-march=native")
        if platform.machine().lower() in ("x86_64", "amd64"):
            flags.append("-mprefer-vector-width=512")  # wider vectors where the CPU has them (AVX-512)
    return flags


def _source() -> bytes:
    return resources.files("grain_bench").joinpath("kernels").joinpath(SOURCE).read_bytes()


def candidates(folder: str) -> list[tuple[list[str], str]]:
    """(flags, cached path) of each build variant, in the order they are tried. The name hashes the source, the
    compiler's name (not its path: none needs to be installed to find a cached kernel), the CPU and the flags."""
    machine = b"\0".join([_source(), _compiler_name().encode(), _cpu_signature().encode()])
    out = []
    for native, openmp in VARIANTS:
        flags = _flags(native, openmp)
        key = hashlib.sha256(machine + b"\0" + " ".join(flags).encode()).hexdigest()[:16]
        out.append((flags, os.path.join(folder, f"ragged_attention-{key}.so")))
    return out


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _write_record(path: str, digest: str) -> None:
    """Record ``digest`` as the SHA-256 of the kernel at ``path`` (written whole, then renamed into place)."""
    temporary = f"{path}{_RECORD}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(f"{digest}  {os.path.basename(path)}\n")
    os.replace(temporary, path + _RECORD)


def self_test(path: str) -> str | None:
    """None when the kernel at ``path`` loads and computes attention correctly in a child process; else what went
    wrong, e.g. "crashed in its self-test (SIGBUS)"."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_selftest.py")
    try:
        done = subprocess.run([sys.executable, "-I", "-S", script, path], capture_output=True, text=True,
                              timeout=SELF_TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"did not finish its self-test in {SELF_TEST_TIMEOUT:g} s"
    except OSError as exc:  # no Python executable to run it with
        return f"could not be self-tested ({exc})"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"crashed in its self-test ({signal.Signals(-done.returncode).name})"
    said = (done.stdout.strip() or done.stderr.strip() or f"exit code {done.returncode}").splitlines()[-1]
    return f"failed its self-test: {said}"


def _problem(path: str) -> str | None:
    """Why the cached kernel at ``path`` (which exists) must not be loaded, or None."""
    if not os.path.isfile(path):
        return "is not a file"
    try:
        with open(path + _RECORD, errors="replace") as handle:
            recorded = handle.read().split()[:1]
    except FileNotFoundError:  # built before the records: self-test it once, then record it
        return _self_test_and_record(path)
    try:
        matches = recorded == [_sha256(path)]
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if matches else "does not match the SHA-256 recorded when it was built (a truncated or damaged file)"


def _self_test_and_record(path: str) -> str | None:
    """``self_test(path)``; a kernel that passes gets its record (where the cache can be written)."""
    problem = self_test(path)
    if problem is None:
        with contextlib.suppress(OSError):  # a read-only cache: self-tested again next time
            _write_record(path, _sha256(path))
    return problem


def _move_aside(path: str, problem: str) -> None:
    """Rename the bad kernel at ``path`` to ``*.bad-<time>`` and say so in one line on stderr."""
    aside = f"{path}.bad-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # a concurrent process moved it first
        return
    except OSError as exc:
        raise GrainBenchError(f"the cached ragged kernel {path} {problem} and cannot be moved aside "
                              f"({exc.strerror}): delete it, or set {CACHE_ENV} to another folder") from None
    with contextlib.suppress(OSError):
        os.remove(path + _RECORD)
    print(f"grain-bench: the cached ragged kernel {path} {problem}: moved it aside to {aside}; building it again",
          file=sys.stderr)


def cached() -> str | None:
    """The path of a cached kernel for this source, compiler and CPU that may be loaded, or None (none, or the bad
    ones moved aside). Needs no compiler."""
    for _, path in candidates(cache_dir()):
        if os.path.lexists(path):
            problem = _problem(path)
            if problem is None:
                return path
            _move_aside(path, problem)
    return None


def _compile(compiler: str, flags: list[str], work: str) -> str | None:
    """Compile the source in ``work`` to ``work/kernel.so``; None when the compiler succeeded, else its complaint."""
    try:
        result = subprocess.run([compiler, *flags, SOURCE, "-o", "kernel.so", "-lm"], cwd=work, capture_output=True,
                                text=True)
    except OSError as exc:
        return f"could not run: {exc.strerror}"
    return None if result.returncode == 0 else result.stderr.strip()[-400:]


def _build_variant(compiler: str, flags: list[str], path: str) -> tuple[str, bool] | None:
    """Build into a temporary folder beside ``path``, self-test, then rename into ``path`` with its record. None when
    cached, else (what went wrong, whether the compiler had succeeded)."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path), prefix=".build-") as work:
        with open(os.path.join(work, SOURCE), "wb") as handle:
            handle.write(_source())
        complaint = _compile(compiler, flags, work)
        if complaint is not None:
            return complaint, False
        built = os.path.join(work, "kernel.so")
        problem = self_test(built) if os.path.isfile(built) else "was not written"
        if problem is not None:  # named without its temporary folder, which is gone when the message is read
            return f"exited 0 but the kernel it built {problem.replace(work + os.sep, '')}", True
        _write_record(path, _sha256(built))
        os.replace(built, path)  # atomic; a concurrent build of the same key writes the same bytes
    return None


def _build(compiler: str, folder: str) -> str:
    """Build, self-test and cache the first variant the compiler builds into a working kernel."""
    failures = []
    for flags, path in candidates(folder):
        failure = _build_variant(compiler, flags, path)
        if failure is None:
            return path
        failures.append((" ".join([os.path.basename(compiler), *flags]), *failure))
    if all(compiled for _, _, compiled in failures):
        raise GrainBenchError(f"the C compiler {compiler} {failures[0][1]} (with each set of flags): nothing was "
                              f"cached; check the compiler (CC), or use another runtime")
    raise GrainBenchError("the ragged runtime could not build its kernel with the C compiler:\n"
                          + "\n".join(f"{command}: {text}" for command, text, _ in failures))


def build() -> str:
    """Path of a compiled kernel that may be loaded in this process: the cache's (``cached``), else one built now,
    self-tested and cached. Problems with the cache folder are one line (``GrainBenchError``)."""
    path = cached()
    if path is not None:
        return path
    compiler = _compiler()
    folder = check_kernel_cache_setting()
    try:
        os.makedirs(folder, exist_ok=True)
        return _build(compiler, folder)
    except OSError as exc:
        raise GrainBenchError(f"the ragged kernel could not be written into its cache folder {folder} "
                              f"({exc.strerror or exc}): free space there, make it writable, or set {CACHE_ENV} to "
                              f"another folder") from None
