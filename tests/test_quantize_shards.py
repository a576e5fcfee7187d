"""The layer-by-layer shard writer against the libraries it stands in for: huggingface_hub's split rule and
safetensors' ``save_file``, byte for byte; and its resume across a crash between commits."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from huggingface_hub import split_torch_state_dict_into_shards  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from hubkit.quantize.shards import METADATA, Entry, ShardWriter, write_safetensors  # noqa: E402

DTYPES = [torch.bfloat16, torch.float32, torch.uint8, torch.float8_e4m3fn, torch.int32, torch.float16, torch.int64]


def random_state(seed: int, count: int = 40) -> dict[str, torch.Tensor]:
    rng = random.Random(seed)
    state = {}
    for i in range(count):
        dtype = rng.choice(DTYPES)
        shape = (rng.randint(1, 9), rng.randint(1, 40)) if rng.random() < 0.9 else (rng.randint(200, 400),)
        values = torch.randint(0, 100, shape).to(dtype) if not dtype.is_floating_point else torch.randn(shape).to(dtype)
        state[f"model.layers.{i // 5}.{rng.choice(['mlp', 'attn'])}.w{i}"] = values
    return state


@pytest.mark.parametrize("seed", range(6))
def test_safetensors_written_one_tensor_at_a_time_equal_save_file(tmp_path: Path, seed: int) -> None:
    state = random_state(seed)
    save_file(state, tmp_path / "reference.safetensors", metadata=METADATA)
    entries = [Entry(k, *_header(v), tensor=v) for k, v in reversed(state.items())]
    write_safetensors(tmp_path / "ours.safetensors", entries)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def _header(tensor: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    from hubkit.quantize.shards import DTYPE_NAMES

    return DTYPE_NAMES[tensor.dtype], tuple(tensor.shape)


@pytest.mark.parametrize(("seed", "limit"), [(0, 400), (1, 900), (2, 2_000), (3, 150), (4, 10**9)])
def test_split_and_files_equal_save_pretrained_layout(tmp_path: Path, seed: int, limit: int) -> None:
    """The same tensors in the same order give huggingface_hub's shards (one tensor above the limit gets its own,
    where it arrives), whatever the commits in between, and a restore from any committed state continues it."""
    state = random_state(seed)
    split = split_torch_state_dict_into_shards(state, max_shard_size=limit)
    reference = tmp_path / "reference"
    reference.mkdir()
    for name, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, reference / name, metadata=METADATA)

    ours, scratch = tmp_path / "ours", tmp_path / "scratch"
    ours.mkdir()
    scratch.mkdir()
    writer = ShardWriter(ours, scratch, limit)
    for i, (key, tensor) in enumerate(state.items()):
        writer.add(key, tensor)
        if i % 7 == 6:  # a layer ends: commit, record the state, and pick up again as a rerun would
            writer.commit(f"{i:05d}")
            saved = json.loads(json.dumps(writer.state()))
            writer.forget_obsolete()
            writer = ShardWriter.restore(ours, scratch, saved)
    files = writer.finish(total_parameters=123)
    assert list(scratch.iterdir())  # the pending files stay until the caller has recorded the finished shards
    writer.forget_obsolete()
    assert sorted(files) == sorted(split.filename_to_tensors)
    for name in files:
        assert (ours / name).read_bytes() == (reference / name).read_bytes(), name
    if split.is_sharded:
        index = json.loads((ours / "model.safetensors.index.json").read_text())
        assert index["weight_map"] == split.tensor_to_filename
        assert index["metadata"] == {"total_parameters": 123, "total_size": split.metadata["total_size"]}
    assert not list(scratch.iterdir())  # no pending file left once everything is in a shard


def test_uncommitted_work_is_ignored_by_a_restore(tmp_path: Path) -> None:
    """A crash after tensors were added (and even written) but before the state was recorded: the rerun restores
    the recorded state, adds the same tensors again, and the files come out the same."""
    state = random_state(7)
    keys = list(state)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    clean = tmp_path / "clean"
    clean.mkdir()
    writer = ShardWriter(clean, scratch, 500)
    for key in keys:
        writer.add(key, state[key])
    expected = {name: (clean / name).read_bytes() for name in writer.finish(7)}

    out, scratch2 = tmp_path / "out", tmp_path / "scratch2"
    out.mkdir()
    scratch2.mkdir()
    writer = ShardWriter(out, scratch2, 500)
    for key in keys[:20]:
        writer.add(key, state[key])
    writer.commit("a")
    recorded = json.loads(json.dumps(writer.state()))
    for key in keys[20:30]:  # the next layer: added and committed, but killed before its state was recorded
        writer.add(key, state[key])
    writer.commit("b")
    writer = ShardWriter.restore(out, scratch2, recorded)
    for key in keys[20:]:
        writer.add(key, state[key])
    produced = writer.finish(7)
    assert {name: (out / name).read_bytes() for name in produced} == expected
