"""`fastasr transcribe` takes audio as teams hand it over (fastasr.corpus.inputs): directories, `-` and `@FILE`
lists, NeMo manifests, Kaldi wav.scp; `--out` writes TSV or JSON lines whole; a path of the wrong kind gets a
"did you mean"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.cli import main
from fastasr.inference.export import export

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    ckpt = save_checkpoint(talkative_model(), d / "run" / "last.pt")
    out = export(ckpt, d / "export")
    audio = d / "audio" / "sub"
    audio.mkdir(parents=True)
    wavs = [write_audio(audio / f"u{i}.wav", 1.0 + 0.3 * i, seed=i) for i in range(3)]
    (audio / "notes.txt").write_text("not audio")
    return d, ckpt, out, wavs


def lines(capsys, *argv) -> list[list[str]]:
    assert main(["transcribe", *argv]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def test_every_kind_of_list_names_the_same_files(setup, capsys, tmp_path):
    d, _, out, wavs = setup
    want = lines(capsys, "--model", str(out), *map(str, wavs))
    assert [w for w, _ in want] == list(map(str, wavs)) and any(t for _, t in want)
    assert lines(capsys, "--model", str(out), str(d / "audio")) == want  # recursive, sorted, audio only
    (tmp_path / "list.txt").write_text("# the test files\n" + "".join(f"{w}\n" for w in wavs) + "\n")
    assert lines(capsys, "--model", str(out), f"@{tmp_path / 'list.txt'}") == want
    piped = subprocess.run([sys.executable, "-m", "fastasr", "transcribe", "--model", str(out), "-"],
                           input="".join(f"{w}\n" for w in wavs), capture_output=True, text=True)
    assert piped.returncode == 0 and [line.split("\t") for line in piped.stdout.splitlines()] == want
    manifest = d / "audio" / "manifest.json"  # relative paths from the manifest's directory, as NeMo reads them
    manifest.write_text("".join(json.dumps({"audio_filepath": f"sub/{w.name}", "duration": 1.0, "text": "x"}) + "\n"
                                for w in wavs))
    got = lines(capsys, "--model", str(out), str(manifest))
    assert [t for _, t in got] == [t for _, t in want]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"utt{i} {w}\n" for i, w in enumerate(wavs)))
    assert lines(capsys, "--model", str(out), str(scp)) == [[f"utt{i}", t] for i, (_, t) in enumerate(want)]


def test_out_files_are_written_whole(setup, capsys, tmp_path):
    _, ckpt, out, wavs = setup
    want = lines(capsys, "--checkpoint", str(ckpt), "--timestamps", *map(str, wavs))
    assert main(["transcribe", "--checkpoint", str(ckpt), "--timestamps", "--out", str(tmp_path / "r.tsv"),
                 *map(str, wavs)]) == 0
    assert capsys.readouterr().out == ""
    assert [line.split("\t") for line in (tmp_path / "r.tsv").read_text().splitlines()] == want
    want = lines(capsys, "--model", str(out), "--timestamps", *map(str, wavs))
    assert main(["transcribe", "--model", str(out), "--timestamps", "--out", str(tmp_path / "r.jsonl"),
                 *map(str, wavs)]) == 0
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["id"], r["path"], r["text"], r["words"]) for r in records] == [(w, w, t, json.loads(ws))
                                                                              for w, t, ws in want]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_wrong_kinds_and_broken_lists_are_one_line(setup, capsys, tmp_path):
    d, ckpt, out, wavs = setup
    cases = [
        (["--checkpoint", str(d / "run"), str(wavs[0])], f"did you mean {d / 'run' / 'last.pt'}?"),
        (["--checkpoint", str(out), str(wavs[0])], f"did you mean --model {out}?"),
        (["--model", str(ckpt), str(wavs[0])], f"did you mean --checkpoint {ckpt}"),
    ]
    scp = tmp_path / "wav.scp"
    scp.write_text("a sox x.wav -t wav - |\n")
    cases.append((["--model", str(out), str(scp)], "reads audio files only"))
    (tmp_path / "empty.txt").write_text("\n")
    cases.append((["--model", str(out), f"@{tmp_path / 'empty.txt'}"], "names no files"))
    (tmp_path / "bad.jsonl").write_text('{"text": "no path"}\n')
    cases.append((["--model", str(out), str(tmp_path / "bad.jsonl")], "audio_filepath"))
    cases.append((["--model", str(out), "--out", str(tmp_path), str(wavs[0])], "is a directory"))
    for argv, message in cases:
        assert main(["transcribe", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert main(["eval", "--checkpoint", str(d / "run"), "--data", str(d), "--out", str(tmp_path / "e")]) == 2
    assert "is a directory; did you mean" in capsys.readouterr().err
