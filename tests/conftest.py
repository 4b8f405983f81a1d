"""Shared fixtures: no network, a fresh plugin manager per test, temporary results directories, tiny models."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# what runs file for this user (rates for --dry-run, cost models, records kept aside) goes to a folder of this test
# session, removed at its end: the suite leaves the user's own grain-bench folder as it found it
_HOME = tempfile.mkdtemp(prefix="grain-bench-tests-home-")
os.environ["GRAIN_BENCH_HOME"] = _HOME
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

import pytest  # noqa: E402

DATAPACK = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datapack"))


@pytest.fixture(autouse=True)
def own_home(monkeypatch, tmp_path_factory):
    """Each test its own ``GRAIN_BENCH_HOME`` (teachers, rates, cost models, records kept aside), so no test finds a
    teacher another one trained; module-scoped fixtures run in the session's."""
    monkeypatch.setenv("GRAIN_BENCH_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def pm(monkeypatch):
    """A fresh plugin manager with only the built-in plugins (entry points off) and its registries."""
    from grain_bench import plugins

    monkeypatch.setenv(plugins.ENV_LOAD_PLUGINS, "")
    plugins.reset()
    manager = plugins.make_plugin_manager()
    yield manager
    plugins.reset()


@pytest.fixture
def regs(pm):
    """Registries of the fresh plugin manager."""
    from grain_bench.plugins import get_registries

    return get_registries(pm)


@pytest.fixture
def results_dir(tmp_path):
    """An empty results directory."""
    path = tmp_path / "results"
    path.mkdir()
    return str(path)


@pytest.fixture
def test_recipe():
    """The seconds-long recipe for the tiny backbone."""
    from grain_bench.recipes import get_recipe

    return get_recipe("test")


@pytest.fixture
def data_dir(tmp_path):
    """A small SST-2 folder in the GLUE layout that the tiny backbone's teacher learns (unlike tweets)."""
    from helpers import write_sst2

    return write_sst2(tmp_path / "data")


@pytest.fixture
def tiny_model():
    """A tiny random-init BertForSequenceClassification (hidden 32, 2 layers, 4 heads, FFN 64) and its tokenizer."""
    from grain_bench.backbones import load_tiny

    model, tokenizer = load_tiny("sequence", 2)
    return model.eval(), tokenizer


@pytest.fixture
def one_thread():
    """Train with one torch thread: on a shared 2-core machine a second thread mostly spins, several times slower (and
    each 1-CPU Ray worker runs with one thread too)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def datapack_path(*parts: str) -> str:
    """Path inside ../shared/datapack; tests that need it skip with a reason when it is absent."""
    path = os.path.join(DATAPACK, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real task files not found at {path} (the shared datapack is only on the developers' machines)")
    return path


@pytest.fixture
def builtin_plugins_only(monkeypatch, tmp_path):
    """Only the built-in plugins load (through the process-wide registry too), and records a sweep has to keep aside
    go to a temporary ``GRAIN_BENCH_HOME``."""
    from grain_bench import plugins

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    monkeypatch.setenv("GRAIN_BENCH_HOME", str(tmp_path / "home"))
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def small_fs(tmp_path):
    """Mount a fresh tmpfs (size given to the returned function) at a new folder; unmounted afterwards."""
    mounts = []

    def mount(size: str = "1m") -> str:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem here ({done.stderr.strip() or 'mount failed'}); "
                        f"the storage-failure tests need root or a user namespace with mount rights")
        mounts.append(point)
        return str(point)

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def lock_holder():
    """Start a process that holds a store's lock until the test ends (the test waits for its 'locked' line)."""
    procs = []

    def hold(results: str):
        code = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
                "print('locked', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code, os.path.join(results, "records.jsonl.lock")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)
