"""`fastasr shard` builds only into an empty folder or its own build, and deletes only what it wrote there
(fastasr.shards.ownership)."""

import json

import pytest
from bounds_helpers import member_blocks, write_raw_tar
from corpus_helpers import build, make_corpus, shard_bytes

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.shards.ownership import BUILD_MARK, META_DIR


def foreign_tar(path) -> bytes:
    write_raw_tar(path, [member_blocks("x/0001.flac", b"another tool's sample")])
    return path.read_bytes()


def test_a_foreign_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 4)
    theirs = {name: foreign_tar(out / name) for name in ("train/shard-000000.tar", "train/shard-000005.tar")}
    assert main(["shard", str(src), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train/shard-000000.tar" in err[0] and "--force" in err[0]
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(theirs)
    assert all((out / name).read_bytes() == data for name, data in theirs.items())


def test_force_writes_only_the_builds_own_names(tmp_path):
    """With --force the plan's shards are written; a file of another name, or of a shard name outside the plan,
    stays — also through a rebuild of a smaller plan, which removes only the shards fastasr wrote."""
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 8)
    kept = {"train/shard-000099.tar": foreign_tar(out / "train/shard-000099.tar"),
            "train/shard-x.tar": foreign_tar(out / "train/shard-x.tar"),
            "notes.txt": b"mine"}
    (out / "notes.txt").write_bytes(b"mine")
    with pytest.raises(UserError, match="notes.txt"):
        build(src, out, shard_size=2)
    first = build(src, out, shard_size=2, force=True)
    ours = {s["path"] for v in first.index["splits"].values() for s in v["shards"]}
    assert len(ours) >= 3 and not ours & set(kept)
    for name in sorted(src.rglob("utt000[4-7].*")):
        name.unlink()
    second = build(src, out, shard_size=2)  # now a fastasr build: no --force needed
    left = {s["path"] for v in second.index["splits"].values() for s in v["shards"]}
    assert len(left) < len(ours)
    assert set(shard_bytes(out)) == left | {"train/shard-000099.tar", "train/shard-x.tar"}  # ours gone, theirs kept
    assert all((out / name).read_bytes() == data for name, data in kept.items())


def test_an_index_of_another_tools_shards_is_not_a_fastasr_build(tmp_path):
    """`fastasr index` writes a fastasr-shards/1 index beside another tool's shards (with `origin`)."""
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 2)
    foreign_tar(out / "train/shard-000000.tar")
    (out / "index.json").write_text(json.dumps({"format": "fastasr-shards/1", "origin": {"kind": "webdataset"}}))
    with pytest.raises(UserError, match="not a fastasr shard build"):
        build(src, out)


@pytest.mark.parametrize("left", ["mark only", "sidecars, no mark", "index, no mark", "parts, no mark"])
def test_half_finished_and_older_builds_are_recognised(tmp_path, left):
    """A build killed before index.json resumes; builds made before the mark existed are recognised by their
    sidecars, part indexes or index.json."""
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 6)
    clean = build(src, tmp_path / "clean", shard_size=2)
    if left == "mark only":  # killed while writing the first shard
        (out / META_DIR).mkdir(parents=True)
        (out / META_DIR / BUILD_MARK).touch()
        (out / "train").mkdir()
        (out / "train/.shard-000000.tar.tmp-12345").write_bytes(b"half a tar")
    elif left == "parts, no mark":
        build(src, out, shard_size=2, part=(1, 2))
        (out / META_DIR / BUILD_MARK).unlink()
    else:
        build(src, out, shard_size=2)
        (out / META_DIR / BUILD_MARK).unlink()
        if left == "sidecars, no mark":
            (out / "index.json").unlink()
    again = build(src, out, shard_size=2)
    assert shard_bytes(out) == shard_bytes(tmp_path / "clean")
    assert again.index["totals"] == clean.index["totals"]
    assert not list(out.glob("*/.*tmp*"))


def test_an_empty_folder_or_one_with_empty_folders_is_fine(tmp_path):
    src, out = tmp_path / "c", tmp_path / "out"
    make_corpus(src, 2)
    (out / "train" / "deeper").mkdir(parents=True)
    assert build(src, out).index["totals"]["samples"] == 2
