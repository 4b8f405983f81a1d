"""Shared fixtures: no network, a fresh plugin manager per test, temporary results directories, tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

DATAPACK = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datapack"))


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
