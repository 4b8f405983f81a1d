"""Integrity of the artifacts grain-bench writes and later trusts (issue 28): saved compact models, masks files and
predictions files, and ``grain-bench measure``'s checks before it times anything.

Fault injection over each artifact kind (truncate, flip bytes, replace with another run's file, make it a directory,
make its folder read-only): each either loads correctly or fails with one line naming the file and what to do;
nothing wrong is ever served."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.masks import MaskSpace, UnitMasks


def _random_masks(space: MaskSpace, seed: int, keep: float = 0.6) -> UnitMasks:
    generator = torch.Generator().manual_seed(seed)
    return UnitMasks(*(torch.rand(shape, generator=generator) < keep for shape in space.shapes().values()))


def _inputs(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, vocab, (2, 9), generator=generator),
            "attention_mask": torch.ones(2, 9, dtype=torch.long)}


@pytest.fixture
def saved(tmp_path, tiny_model):
    """(compact model, its saved folder, a second run's saved folder of another shape)."""
    from grain_bench.compaction import compact, save_pruned

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _random_masks(space, 0), space).eval()
    other = compact(model, _random_masks(space, 1, keep=0.4), space).eval()
    return (small, save_pruned(small, str(tmp_path / "model"), tokenizer=tokenizer),
            save_pruned(other, str(tmp_path / "other"), tokenizer=tokenizer))


def _edit_json(file: str, edit) -> None:
    with open(file) as handle:
        values = json.load(handle)
    edit(values)
    with open(file, "w") as handle:
        json.dump(values, handle)


def _unverified(folder: str) -> None:
    """Make ``folder`` look saved before the content hashes were recorded."""
    _edit_json(os.path.join(folder, "grain_bench.json"), lambda meta: meta.pop("sha256"))


def _truncate(file: str) -> None:
    os.truncate(file, os.path.getsize(file) // 2)


def _flip(file: str) -> None:
    data = bytearray(open(file, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(file, "wb") as handle:
        handle.write(data)


def _make_directory(file: str) -> None:
    os.remove(file)
    os.mkdir(file)


def _one_line_naming(exc: GrainBenchError, file: str) -> str:
    text = str(exc)
    assert "\n" not in text and file in text, text
    return text


# --- saved models --------------------------------------------------------------------------------------------------

def test_a_saved_model_records_the_hashes_of_its_config_and_weights(saved):
    from grain_bench.compaction import file_sha256, load_pruned

    small, folder, _ = saved
    with open(os.path.join(folder, "grain_bench.json")) as handle:
        hashes = json.load(handle)["sha256"]
    assert hashes == {name: file_sha256(os.path.join(folder, name)) for name in ("config.json", "model.safetensors")}
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, load_pruned(folder)(**inputs).logits)


@pytest.mark.parametrize("fault", ["truncate", "flip", "another run's", "directory", "missing"])
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_damaged_saved_model_is_refused_naming_the_file(saved, fault, name):
    """Each fault on the weights or the config of a saved model raises one ``UsageError`` line naming the file."""
    from grain_bench.compaction import load_pruned

    _, folder, other = saved
    file = os.path.join(folder, name)
    {"truncate": _truncate, "flip": _flip, "directory": _make_directory, "missing": os.remove,
     "another run's": lambda f: shutil.copyfile(os.path.join(other, name), f)}[fault](file)
    with pytest.raises(UsageError) as caught:
        load_pruned(folder)
    assert "save" in _one_line_naming(caught.value, file)


def test_metadata_from_another_run_is_refused(saved):
    from grain_bench.compaction import load_pruned

    _, folder, other = saved
    shutil.copyfile(os.path.join(other, "grain_bench.json"), os.path.join(folder, "grain_bench.json"))
    with pytest.raises(UsageError, match="does not match the SHA-256 recorded"):
        load_pruned(folder)


@pytest.mark.parametrize("change", [1, -1])
def test_a_config_with_a_layer_more_or_fewer_than_the_weights_is_refused(saved, change):
    """Without a hash (a folder saved before them), a config listing one more layer than the weights (which gave a
    randomly initialised layer) or one fewer (which dropped one) is refused on the tensors' names."""
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)

    def edit(config):
        config["layer_shapes"] = (config["layer_shapes"] + config["layer_shapes"][:1] if change > 0
                                  else config["layer_shapes"][:-1])
        config["num_hidden_layers"] += change

    _edit_json(os.path.join(folder, "config.json"), edit)
    with pytest.raises(UsageError, match="does not fit the widths in config.json") as caught:
        load_pruned(folder)
    _one_line_naming(caught.value, os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("field", ["heads", "ffn_dim"])
def test_a_config_with_other_widths_than_the_weights_is_refused(saved, field):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)

    def edit(config):
        layer = config["layer_shapes"][0]
        if field == "heads":
            layer["heads"][0][1] += 1
        else:
            layer["ffn_dim"] += 1

    _edit_json(os.path.join(folder, "config.json"), edit)
    with pytest.raises(UsageError, match="of another shape"):
        load_pruned(folder)


def test_non_finite_weights_are_refused(saved):
    """NaN weights (which gave every logit NaN) are refused, also in a folder without hashes."""
    from safetensors.torch import load_file, save_file

    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)
    weights = os.path.join(folder, "model.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[-1]
    tensors[name][0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UsageError, match=f"non-finite weights .* first {name}"):
        load_pruned(folder)


def test_a_folder_saved_before_hashes_still_loads(saved):
    """Saved before the hashes were recorded: not verified against one, still loaded (shapes and finiteness hold)."""
    from grain_bench.compaction import load_pruned

    small, folder, _ = saved
    _unverified(folder)
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, load_pruned(folder)(**inputs).logits)


@pytest.mark.parametrize("file, key", [("grain_bench.json", "format_version"), ("grain_bench.json", "format")])
def test_metadata_of_another_format_is_refused(saved, file, key):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _edit_json(os.path.join(folder, file), lambda meta: meta.update({key: 99}))
    with pytest.raises(UsageError) as caught:
        load_pruned(folder)
    _one_line_naming(caught.value, os.path.join(folder, file))


def test_a_read_only_saved_model_loads_and_nothing_is_written(saved):
    from grain_bench.compaction import load_pruned

    small, folder, _ = saved
    before = sorted(os.listdir(folder))
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        loaded = load_pruned(folder)
    finally:
        os.chmod(folder, stat.S_IRWXU)
    assert sorted(os.listdir(folder)) == before
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, loaded(**inputs).logits)


def test_an_unreadable_saved_model_is_refused_in_one_line(saved):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    os.chmod(os.path.join(folder, "model.safetensors"), 0)
    try:
        if os.access(os.path.join(folder, "model.safetensors"), os.R_OK):
            pytest.skip("this user reads a file without read permission (root)")
        with pytest.raises(UsageError, match="cannot read"):
            load_pruned(folder)
    finally:
        os.chmod(os.path.join(folder, "model.safetensors"), 0o644)
