"""The ragged kernel's build cache (grain_bench.kernel_cache): a cached kernel is loaded only when it is the one that
was built and self-tested (a truncated or damaged one is moved aside and built again, never a SIGBUS or SIGILL), a
"compiler" that writes no working kernel caches nothing, a cached kernel needs no compiler, and every problem with the
cache's location is one line. Like tests/test_ragged.py, the builds use the system's C compiler (``cc``)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
import sys

import pytest
from helpers import fill_filesystem

from grain_bench.errors import GrainBenchError, UsageError

#: a child process that loads the cache's kernel as the ragged runtime does, and calls it (a bad kernel would crash it)
LOAD = ("import ctypes; from grain_bench.kernel_cache import build; path = build(); "
        "ctypes.CDLL(path).grain_ragged_attention; print('loaded', path)")
MOVED = re.compile(r"grain-bench: the cached ragged kernel (\S+) (.+): moved it aside to (\S+\.bad-\d{8}T\d{6}); "
                   r"building it again")


@pytest.fixture(scope="module")
def built_kernel(tmp_path_factory):
    """A kernel built once for the module by the system's compiler: (its path, its SHA-256 record's path)."""
    from grain_bench import kernel_cache

    folder = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(kernel_cache.CACHE_ENV, str(folder))
        patch.delenv("CC", raising=False)
        path = kernel_cache.build()
    return path, path + ".sha256"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder for the test (``GRAIN_BENCH_KERNEL_CACHE``), with the default compiler."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", str(folder))
    monkeypatch.delenv("CC", raising=False)
    return folder


def _cache_copy(built_kernel, folder, record=True) -> str:
    """The module's kernel copied into ``folder`` (with its SHA-256 record, or as a kernel from before the records)."""
    path, record_path = built_kernel
    shutil.copy(path, folder)
    if record:
        shutil.copy(record_path, folder)
    return os.path.join(folder, os.path.basename(path))


def _text_section(path) -> tuple[int, int]:
    """(file offset, size) of the ``.text`` section of a 64-bit little-endian ELF file: the kernel's code."""
    data = open(path, "rb").read()
    assert data[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file"

    def number(at, size):
        return int.from_bytes(data[at:at + size], "little")

    start, entry, count = number(0x28, 8), number(0x3A, 2), number(0x3C, 2)
    names = number(start + number(0x3E, 2) * entry + 0x18, 8)
    for i in range(count):
        header = start + i * entry
        name = data[names + number(header, 4):].split(b"\0", 1)[0]
        if name == b".text":
            return number(header + 0x18, 8), number(header + 0x20, 8)
    raise AssertionError("no .text section")


def _damage(path, how) -> None:
    """Truncate the kernel to a third (loading it maps pages past its end: SIGBUS), or overwrite its code with
    undefined instructions (calling it: SIGILL)."""
    if how == "truncated":
        os.truncate(path, os.path.getsize(path) // 3)
        return
    filler = {"x86_64": b"\x0f\x0b", "aarch64": b"\0\0\0\0"}.get(platform.machine())  # ud2; udf #0
    if filler is None:
        pytest.skip(f"no undefined instruction known for {platform.machine()}")
    offset, size = _text_section(path)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(filler * (size // len(filler)))


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "from-before-records"])
@pytest.mark.parametrize("how,crash", [("truncated", "SIGBUS"), ("damaged-code", "SIGILL")])
def test_a_damaged_cached_kernel_is_moved_aside_and_rebuilt(built_kernel, cache, how, crash, recorded):
    """Finding: a truncated cached kernel killed the process with SIGBUS, one with damaged code with SIGILL, without a
    word. Now a cached kernel whose bytes differ from the SHA-256 recorded at build time is never loaded, and one
    from before the records is self-tested in a child process first; either way it is moved aside with one line on
    stderr, and the kernel is built again and loads."""
    path = _cache_copy(built_kernel, cache, record=recorded)
    _damage(path, how)
    done = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["loaded", path]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and (moved := MOVED.fullmatch(lines[0])), done.stderr
    assert moved[1] == path and os.path.isfile(moved[3])
    assert moved[2] == ("does not match the SHA-256 recorded when it was built (a truncated or damaged file)"
                        if recorded else f"crashed in its self-test ({crash})")
    with open(path + ".sha256") as handle:  # the rebuilt kernel and its record
        assert handle.read().split() == open(built_kernel[1]).read().split()


def test_concurrent_first_builds_cache_one_kernel_that_matches_its_record(cache, capsys):
    """Two processes that build the same kernel at once each build in their own temporary folder and rename into
    place; the compiler sees the same relative source name, so both write the same bytes and the record matches
    whichever rename came last: both load it, and nothing else is left in the cache."""
    children = [subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=os.environ) for _ in range(2)]
    outputs = [child.communicate() for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    paths = {out.split()[1] for out, _ in outputs}
    assert len(paths) == 1 and all(err == "" for _, err in outputs), outputs
    path = paths.pop()
    from grain_bench import kernel_cache

    assert kernel_cache.build() == path and capsys.readouterr().err == ""  # the record matches: not moved aside
    assert sorted(os.listdir(cache)) == [os.path.basename(path), os.path.basename(path) + ".sha256"]


def test_a_kernel_from_before_the_records_is_self_tested_once_and_recorded(built_kernel, cache):
    """A working kernel cached without a record (an older grain-bench built it) is kept, not rebuilt, and recorded."""
    from grain_bench import kernel_cache

    path = _cache_copy(built_kernel, cache, record=False)
    before = os.stat(path).st_mtime_ns
    assert kernel_cache.build() == path and os.stat(path).st_mtime_ns == before
    assert open(path + ".sha256").read() == open(built_kernel[1]).read()


@pytest.mark.parametrize("writes,problem", [
    ("echo 'not a kernel' > \"$out\"", r"failed its self-test: does not load \(kernel.so: .*\)"),
    ("cc -shared -fPIC -o \"$out\" \"$stub\"", r"failed its self-test: computes wrong attention \(largest error .*\)"),
], ids=["not-elf", "wrong-numbers"])
def test_a_compiler_that_builds_no_working_kernel_caches_nothing(cache, tmp_path, monkeypatch, writes, problem):
    """Finding: a "compiler" that exits 0 and writes a non-ELF file got it cached, and every later use failed. Now a
    build is self-tested before it is renamed into the cache: one line, and nothing cached (nor left behind)."""
    from grain_bench import kernel_cache

    stub = tmp_path / "stub.c"
    stub.write_text("int grain_ragged_attention(void) { return 0; }\n")  # computes nothing: the output stays zero
    compiler = tmp_path / "fake-cc"
    compiler.write_text(f"#!/bin/sh\nstub={stub}\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=\"$2\"; shift; done\n"
                        f"{writes}\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(GrainBenchError) as caught:
        kernel_cache.build()
    assert re.fullmatch(rf"the C compiler {re.escape(str(compiler))} exited 0 but the kernel it built {problem} "
                        r"\(with each set of flags\): nothing was cached; check the compiler \(CC\), or use another "
                        r"runtime", str(caught.value)), str(caught.value)
    assert os.listdir(cache) == []


def test_a_kernel_that_passes_its_checks_but_does_not_load_is_one_line(cache, monkeypatch):
    """The last guard: a cached file whose record was forged to match (no build wrote it) is not a kernel; loading it
    in this process is a ``GrainBenchError`` naming it, not a raw ``OSError``."""
    from grain_bench import kernel_cache, ragged

    path = kernel_cache.candidates(str(cache))[0][1]
    with open(path, "w") as handle:
        handle.write("not a kernel")
    with open(path + ".sha256", "w") as handle:
        handle.write(f"{kernel_cache._sha256(path)}  {os.path.basename(path)}\n")
    monkeypatch.setattr(ragged, "_LIBRARY", None)  # this process may have loaded the real kernel already
    with pytest.raises(GrainBenchError, match=rf"^the ragged kernel {re.escape(path)} passed its checks but does not "
                                              rf"load in this process \(.*\): delete it to build it again, or use "
                                              rf"another runtime$"):
        ragged.library()


def test_a_cached_kernel_needs_no_compiler(built_kernel, cache, tmp_path, monkeypatch):
    """Finding: the cache needed a compiler on PATH even for a kernel it had built. Now it finds the kernel by a name
    that does not depend on where the compiler is; without a cached kernel, the missing compiler is one line."""
    from grain_bench import kernel_cache

    path = _cache_copy(built_kernel, cache)
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert kernel_cache.build() == path
    done = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=os.environ)
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["loaded", path], "")
    os.remove(path)
    with pytest.raises(GrainBenchError, match=r"^the ragged runtime needs a C compiler to build its kernel: 'cc' was "
                                              r"not found \(set CC to one, or use another runtime\)$"):
        kernel_cache.build()


@pytest.mark.parametrize("setting,expected", [
    ("relative/kernels", r"GRAIN_BENCH_KERNEL_CACHE='relative/kernels' is not an absolute path: set "
                         r"GRAIN_BENCH_KERNEL_CACHE to an absolute folder path, or unset it for .*kernels"),
    ("{tmp}/a-file", r"GRAIN_BENCH_KERNEL_CACHE='{tmp}/a-file': {tmp}/a-file is not a folder \(a file is in the "
                     r"way\): move it, or set GRAIN_BENCH_KERNEL_CACHE to an absolute folder path, or unset it .*"),
    ("{tmp}/a-file/kernels", r"GRAIN_BENCH_KERNEL_CACHE='{tmp}/a-file/kernels': {tmp}/a-file is not a folder .*"),
    ("/dev/null", r"GRAIN_BENCH_KERNEL_CACHE='/dev/null': /dev/null is not a folder .*"),
], ids=["relative", "file", "file-above", "device"])
def test_an_unusable_cache_setting_is_one_line(tmp_path, monkeypatch, setting, expected):
    """Finding: a file where the cache folder should be gave a raw OSError. The setting's form is checked without
    building (``check_kernel_cache_setting``, for a sweep's preflight), and by every build, in one line."""
    from grain_bench import kernel_cache

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", setting.format(tmp=tmp_path))
    pattern = expected.format(tmp=re.escape(str(tmp_path)))
    for call in (kernel_cache.check_kernel_cache_setting, lambda: kernel_cache.check_kernel_cache_setting(False),
                 kernel_cache.build):
        with pytest.raises(UsageError) as caught:
            call()
        assert re.fullmatch(pattern, str(caught.value)), str(caught.value)


def test_the_cache_setting_expands_home_and_an_empty_one_is_the_default(tmp_path, monkeypatch):
    """``~`` in ``GRAIN_BENCH_KERNEL_CACHE`` is the home folder (a quoted ``~`` in a shell stays unexpanded); unset
    or empty means ``~/.cache/grain-bench/kernels``. Neither creates anything."""
    from grain_bench import kernel_cache

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", "~/kernels")
    assert kernel_cache.check_kernel_cache_setting() == str(tmp_path / "kernels")
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", "")
    assert kernel_cache.check_kernel_cache_setting() == str(tmp_path / ".cache" / "grain-bench" / "kernels")
    assert os.listdir(tmp_path) == []


def test_a_cache_on_a_noexec_filesystem_is_refused_in_one_line(small_fs, monkeypatch):
    """A cache folder where nothing may be executed (``mount -o noexec``) could never load a kernel: refused before
    building (otherwise every build would fail its self-test, and the compiler would be blamed)."""
    from grain_bench import kernel_cache

    point = small_fs()
    done = subprocess.run(["mount", "-o", "remount,noexec", point], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount noexec: {done.stderr.strip()}")
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", os.path.join(point, "kernels"))
    for call in (kernel_cache.check_kernel_cache_setting, kernel_cache.build):
        with pytest.raises(UsageError, match=r"^GRAIN_BENCH_KERNEL_CACHE='.*/kernels' is on a filesystem mounted "
                                             r"noexec, where no kernel can be loaded from: set "
                                             r"GRAIN_BENCH_KERNEL_CACHE to an absolute folder path, or unset it for "
                                             r".*$"):
            call()


def _make_read_only(folder, small_fs_point=None) -> str:
    """Make ``folder`` read-only: its filesystem remounted read-only (as root, whom mode bits do not stop), else its
    mode bits. Returns the reason the cache gives."""
    if os.geteuid() != 0:
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
        return "permission denied"
    done = subprocess.run(["mount", "-o", "remount,ro", small_fs_point], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    return "read-only file system"


def _read_only_cache(small_fs, tmp_path, monkeypatch, fill=None) -> tuple[str, str]:
    """A cache folder (``GRAIN_BENCH_KERNEL_CACHE``) that ``fill(folder)`` fills before it becomes read-only;
    returns (folder, the reason given)."""
    point = small_fs() if os.geteuid() == 0 else str(tmp_path)
    folder = os.path.join(point, "kernels")
    os.makedirs(folder)
    if fill is not None:
        fill(folder)
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", folder)
    monkeypatch.delenv("CC", raising=False)
    return folder, _make_read_only(folder, point)


def test_a_read_only_cache_serves_its_kernel_and_refuses_to_build_in_one_line(built_kernel, small_fs, tmp_path,
                                                                              monkeypatch):
    """Finding: a read-only cache gave a raw OSError. Now a read-only cache that holds the kernel serves it; one that
    holds none is refused in one line by the preflight check and by a build; a damaged kernel that cannot be moved
    aside is one line too."""
    from grain_bench import kernel_cache

    folder, reason = _read_only_cache(small_fs, tmp_path, monkeypatch,
                                      fill=lambda folder: _cache_copy(built_kernel, folder))
    path = os.path.join(folder, os.path.basename(built_kernel[0]))
    assert kernel_cache.check_kernel_cache_setting() == folder and kernel_cache.build() == path

    empty, reason = _read_only_cache(small_fs, tmp_path / "second", monkeypatch)
    expected = (rf"GRAIN_BENCH_KERNEL_CACHE='{re.escape(empty)}' is not writable \({reason}\) and holds no kernel "
                rf"built for this machine: make it writable, or set GRAIN_BENCH_KERNEL_CACHE to a writable folder")
    for call in (kernel_cache.check_kernel_cache_setting, kernel_cache.build):
        with pytest.raises(UsageError) as caught:
            call()
        assert re.fullmatch(expected, str(caught.value)), str(caught.value)
    # a sweep that does not run the ragged runtime checks the form alone, and that is fine
    assert kernel_cache.check_kernel_cache_setting(need_kernel=False) == empty

    damaged, _ = _read_only_cache(small_fs, tmp_path / "third", monkeypatch,
                                  fill=lambda folder: _damage(_cache_copy(built_kernel, folder), "truncated"))
    with pytest.raises(GrainBenchError, match=r"^the cached ragged kernel .* does not match the SHA-256 recorded when "
                                              r"it was built \(a truncated or damaged file\) and cannot be moved "
                                              r"aside \(.*\): delete it, or set GRAIN_BENCH_KERNEL_CACHE to another "
                                              r"folder$"):
        kernel_cache.build()


def test_a_full_cache_disk_is_one_line(small_fs, monkeypatch):
    """Finding: a full disk under the cache gave a raw OSError. A real full filesystem (a small tmpfs, filled): one
    line naming the folder and the reason, and nothing left behind."""
    from grain_bench import kernel_cache

    point = small_fs("256k")
    folder = os.path.join(point, "kernels")
    os.makedirs(folder)
    fill_filesystem(point)
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", folder)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(GrainBenchError, match=rf"^the ragged kernel could not be written into its cache folder "
                                              rf"{re.escape(folder)} \(No space left on device\): free space there, "
                                              rf"make it writable, or set GRAIN_BENCH_KERNEL_CACHE to another "
                                              rf"folder$"):
        kernel_cache.build()
    assert os.listdir(folder) == []


def test_the_ragged_runtime_refuses_an_unusable_cache_before_any_work(tmp_path, monkeypatch, capsys):
    """``grain-bench measure --mode ragged`` and ``load_pruned(..., runtime="ragged")`` check the cache setting first
    (the runtime's ``check``): exit 2 and one line, before a model is read or timed."""
    from helpers import one_line_error

    from grain_bench.cli import main
    from grain_bench.compaction import load_pruned

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", str(tmp_path / "a-file"))
    code = main(["measure", "--results", str(tmp_path / "results"), "--mode", "ragged", "-q"])
    line = one_line_error(code, capsys.readouterr().err)
    assert line.startswith(f"grain-bench: error: GRAIN_BENCH_KERNEL_CACHE='{tmp_path}/a-file': {tmp_path}/a-file is "
                           f"not a folder"), line
    with pytest.raises(UsageError, match="is not a folder"):
        load_pruned(str(tmp_path / "no-model"), runtime="ragged")
