"""`fastasr export --out DIR` replaces only a fastasr export, and so that a failure keeps the old one whole; a
symlink or a file as --out is one line."""

import json
import shutil

import pytest
from export_helpers import save_checkpoint, talkative_model

import fastasr.inference.export as export_module
from fastasr.cli import main
from fastasr.inference.export import export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export_out")
    ckpt = save_checkpoint(talkative_model(), d / "model.pt")
    export(ckpt, d / "exp")
    return ckpt, d / "exp"


def snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(d.rglob("*"))}


def not_exports(out, tmp_path):
    """(--out, what the one line says) for every directory or path export must not replace."""
    def copy(name):
        shutil.copytree(out, tmp_path / name)
        return tmp_path / name

    cases = []
    d = copy("with_notes")
    (d / "notes.txt").write_text("mine")
    cases.append((d, "exists and is not a fastasr export directory"))
    d = copy("with_folder")
    (d / "data").mkdir()
    (d / "data" / "keep.txt").write_text("mine")
    cases.append((d, "exists and is not a fastasr export directory"))
    d = copy("other_format")
    (d / "model.json").write_text('{"format": "someone-else/3"}')
    cases.append((d, "exists and is not a fastasr export directory"))
    d = tmp_path / "only_model_json"  # the old rule: any model.json made a directory replaceable
    d.mkdir()
    (d / "model.json").write_text("{}")
    cases.append((d, "exists and is not a fastasr export directory"))
    (tmp_path / "link").symlink_to(copy("link_target"), target_is_directory=True)
    cases.append((tmp_path / "link", "is a symbolic link"))
    (tmp_path / "file").write_text("mine")
    cases.append((tmp_path / "file", "is a file, not an export directory"))
    return cases


def test_only_a_fastasr_export_is_replaced(exported, tmp_path, capsys):
    ckpt, out = exported
    before = snapshot(tmp_path)
    for target, message in not_exports(out, tmp_path):
        before = snapshot(tmp_path)
        assert main(["export", str(ckpt), "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{target.name}: {message}" in err, err
        assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_export_is_replaced_and_a_failed_replace_keeps_the_old_one(exported, tmp_path, monkeypatch):
    ckpt, out = exported
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "model.json").write_text((again / "model.json").read_text().replace('"step": 7', '"step": 6'))
    old = snapshot(again)

    real_replace = export_module.os.replace

    def fail_moving_the_new_one_in(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(export_module.os, "replace", fail_moving_the_new_one_in)
    with pytest.raises(OSError, match="disk gone"):
        export(ckpt, again)
    assert snapshot(again) == old  # the old export, back in place, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary, no aside left

    monkeypatch.setattr(export_module.os, "replace", real_replace)
    for target in (again, tmp_path / "empty"):  # an empty directory is taken too
        target.mkdir(exist_ok=True)
        export(ckpt, target)
        assert json.loads((target / "model.json").read_text())["source"]["step"] == 7
        assert sorted(snapshot(target)) == sorted(snapshot(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "empty"]


def test_an_export_of_the_older_format_is_replaced(exported, tmp_path):
    """fastasr-onnx/1 directories (before the graphs took sherpa-onnx's convention) are fastasr's to replace."""
    ckpt, out = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    meta = json.loads((old / "model.json").read_text())
    (old / "model.json").write_text(json.dumps({**meta, "format": "fastasr-onnx/1"}))
    assert main(["export", str(ckpt), "--out", str(old)]) == 0
    assert json.loads((old / "model.json").read_text())["format"] == "fastasr-onnx/2"
