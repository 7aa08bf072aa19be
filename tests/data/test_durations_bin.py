"""The binary durations table (fastasr.shards.durations_bin): written beside the JSON one by every build, mapped
by local readers, holding exactly the JSON's numbers, so that the loader plans the same batches and resumes at the
same positions from either; a JSON table written again without it is read as JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from corpus_helpers import build, make_corpus

from fastasr.data import build_loader
from fastasr.data.durations import durations_table
from fastasr.errors import UserError
from fastasr.shards.durations_bin import BinaryShards, bin_paths, read_binary
from fastasr.shards.index import read_durations_table


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    make_corpus(d / "c", 40, seconds=0.6)
    build(d / "c", d / "out", shard_size=6, split_fractions={"train": 0.8, "val": 0.1, "test": 0.1})
    return d / "out"


def keys(out, **kw) -> list[list[str]]:
    loader = build_loader(out, "train", max_batch_seconds=3.0, num_workers=0, shuffle=True, seed=3, **kw)
    return [list(b.keys) for b in loader]


def test_the_twin_holds_the_json_numbers_exactly(built):
    path = built / "durations-train.json"
    want = read_durations_table(str(path))
    got = read_binary(path)
    assert isinstance(got, BinaryShards) and dict(got) == want
    assert all(got.value(s, i) == v for s, vs in want.items() for i, v in enumerate(vs))
    assert isinstance(durations_table.__wrapped__(str(path)).shards, BinaryShards)


def test_plans_and_resume_positions_are_the_same_from_either(built, tmp_path):
    mapped = keys(built)
    json_only = tmp_path / "json_only"
    shutil.copytree(built, json_only)
    for split in ("train", "val", "test"):
        for p in bin_paths(json_only / f"durations-{split}.json"):
            p.unlink()
    assert read_binary(json_only / "durations-train.json") is None
    assert keys(json_only) == mapped and len(mapped) > 3
    assert keys(built, skip_batches=2) == keys(json_only, skip_batches=2) == mapped[2:]


def test_a_rewritten_json_table_is_read_as_json(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    path = out / "durations-train.json"
    table = json.loads(path.read_text())
    first = next(iter(table["shards"]))
    table["shards"][first][0] = 0.123  # another writer's table, without the twin
    path.write_text(json.dumps(table))
    assert read_binary(path) is None
    # a twin that matches its JSON but is damaged is refused in one line
    path.write_text((built / "durations-train.json").read_text())  # the build's table again, the twin stale
    npy, sidecar = bin_paths(path)
    meta = json.loads(sidecar.read_text())
    st = path.stat()
    meta["json"] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    meta["count"] += 1
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match its sidecar"):
        read_binary(path)
    meta["count"] -= 1
    sidecar.write_text(json.dumps(meta))
    values = np.load(npy)
    values[0] = -1.0
    np.save(npy, values)
    with pytest.raises(UserError, match="not seconds >= 0"):
        read_binary(path)[first]


def test_an_index_written_before_the_twin_still_trains(tmp_path):
    """An index with JSON tables only (as fastasr wrote them before the twin) trains: the loader reads the JSON."""
    from asr_helpers import make_config, make_shards

    from fastasr.training.loop import train

    shards = tmp_path / "shards"
    make_shards(shards)
    for table in shards.glob("durations-*.json"):
        for p in bin_paths(table):
            p.unlink(missing_ok=True)
        assert read_binary(table) is None
    result = train(shards, tmp_path / "run", make_config(max_steps=2, ckpt_every=2))
    assert result["steps"] == 2 and (tmp_path / "run" / "last.pt").exists()
