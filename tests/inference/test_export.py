"""`fastasr export` → fastasr.runtime: valid ONNX graphs, and the checkpoint's transcripts out of onnxruntime."""

import json
import shutil

import numpy as np
import onnx
import pytest
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.audio.files import PREEMPHASIS, read_mono, split_long
from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.export import CHECK_TOLERANCE, export
from fastasr.inference.transcribe import transcribe
from fastasr.model.checkpoint import weights_digest
from fastasr.model.transducer import log_mel
from fastasr.runtime import transcribe as runtime_transcribe
from fastasr.text.normalization import DEFAULT_TEXT

PIECE_SECONDS = 4.0  # the long file is cut into pieces by the shared code on both paths
GRAPHS = ["encoder", "predictor", "joiner"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    model = talkative_model()
    ckpt = save_checkpoint(model, d / "model.pt")
    assert main(["export", str(ckpt), "--out", str(d / "exp"), "--quantize", "int8"]) == 0
    return model, ckpt, d / "exp"


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    return [write_audio(d / "stereo48k.wav", 1.3, 1, sr=48000, channels=2, subtype="PCM_16"),
            write_audio(d / "mono8k.flac", 0.7, 2, sr=8000, subtype="PCM_16"),
            write_audio(d / "stereo48k.opus", 2.1, 3, sr=48000, channels=2, format="OGG", subtype="OPUS"),
            write_audio(d / "six22k.wav", 0.9, 4, sr=22050, channels=6, subtype="FLOAT"),
            write_audio(d / "long.wav", 11.0, 5, subtype="FLOAT")]


def test_directory_holds_checked_graphs_tokenizer_and_front_end(exported):
    model, _, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{g}.onnx" for g in GRAPHS] + [f"{g}.int8.onnx" for g in GRAPHS] + ["model.json", "tokenizer.json"])
    for path in out.glob("*.onnx"):
        onnx.checker.check_model(str(path), full_check=True)
    graph_io = {g: {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in (*m.graph.input, *m.graph.output)} for g in GRAPHS
                for m in [onnx.load(str(out / f"{g}.onnx"))]}
    c = model.config
    J, L, H, V = c.joint_dim, c.pred_layers, c.pred_hidden, c.vocab_size
    assert graph_io == {  # sherpa-onnx's NeMo-transducer convention (fastasr.runtime.model_dir)
        "encoder": {"features": ["N", 80, "T"], "feature_lengths": ["N"], "encoder_out": ["N", J, "T_out"],
                    "encoder_out_lengths": ["N"]},
        "predictor": {"targets": ["N", 1], "target_length": ["N"], "h": [L, "N", H], "c": [L, "N", H],
                      "predictor_out": ["N", J, 1], "predictor_out_length": ["N"], "h_out": [L, "N", H],
                      "c_out": [L, "N", H]},
        "joiner": {"encoder_out": ["N", J, 1], "predictor_out": ["N", J, 1], "logits": ["N", V]}}
    assert not onnx.load(str(out / "encoder.onnx")).metadata_props  # sherpa's metadata: kaldi front ends only

    meta = json.loads((out / "model.json").read_text())
    fe = log_mel(model.config)
    assert meta["format"] == "fastasr-onnx/2" and meta["opset"] == 17 and meta["sherpa_onnx"] is None
    assert meta["features"]["type"] == "log_mel"
    assert {k: meta["features"][k] for k in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min",
                                             "f_max", "log_floor", "normalize", "norm_eps")} == {
        "sample_rate": fe.sample_rate, "n_fft": fe.n_fft, "win_length": fe.win_length, "hop_length": fe.hop_length,
        "n_mels": fe.n_mels, "f_min": fe.f_min, "f_max": fe.f_max, "log_floor": fe.log_floor,
        "normalize": fe.normalize, "norm_eps": fe.norm_eps}
    assert meta["audio"] == {"sample_rate": 16000, "downmix": "channel_mean", "resampler": "soxr",
                             "peak_normalize": True, "preemphasis": PREEMPHASIS}
    assert meta["encoder"]["subsampling"] == c.subsampling and meta["encoder"]["dim"] == c.joint_dim
    # Graph ids put the blank last: graph id s is tokenizer id (s + 1) % V.
    assert meta["predictor"] == {"layers": c.pred_layers, "hidden": c.pred_hidden, "start_token": V - 1}
    assert meta["decoding"] == {"blank_id": V - 1, "vocab_size": V, "tokenizer_id_offset": 1,
                                "tokenizer_id": "(graph id + tokenizer_id_offset) % vocab_size",
                                "max_symbols_per_frame": 10}
    assert meta["graphs"]["int8"] == {g: f"{g}.int8.onnx" for g in GRAPHS}
    assert meta["source"]["step"] == 7 and meta["source"]["weights_sha256"] == weights_digest(model)
    assert all(meta["check"]["float"][g] <= CHECK_TOLERANCE for g in GRAPHS)
    tokens = json.loads((out / "tokenizer.json").read_text())
    assert tokens == {"format": "fastasr-tokenizer/1", "type": "char", "blank_id": 0,
                      "tokens": ["<blank>", *DEFAULT_TEXT.alphabet]}


def test_export_transcribes_exactly_like_the_checkpoint(exported, audio, capsys):
    _, ckpt, out = exported
    assert len(split_long(read_mono(audio[-1]), int(PIECE_SECONDS * 16000))) >= 3
    want = transcribe(ckpt, audio, device="cpu", max_piece_seconds=PIECE_SECONDS)
    got = runtime_transcribe(out, audio, max_piece_seconds=PIECE_SECONDS)
    assert got == want
    texts = [t for _, t in want]
    assert len(set(texts)) == len(texts) and all(texts)  # the model's words depend on the audio
    assert len(set("".join(texts))) >= 4
    # Batches of one file give the same texts as one batch of all.
    assert runtime_transcribe(out, audio, max_piece_seconds=PIECE_SECONDS, batch_seconds=0.5) == want
    # The command line prints what --checkpoint prints (tests/inference/test_transcribe.py: the library's texts).
    args = ["--max-piece-seconds", str(PIECE_SECONDS), *map(str, audio)]
    assert main(["transcribe", "--model", str(out), "--threads", "1", *args]) == 0
    assert capsys.readouterr().out == "".join(f"{p}\t{t}\n" for p, t in want)


def test_int8_copy_transcribes_in_the_alphabet(exported, audio, capsys):
    _, _, out = exported
    got = runtime_transcribe(out, audio, precision="int8", threads=1, max_piece_seconds=PIECE_SECONDS)
    assert [p for p, _ in got] == [str(a) for a in audio]
    assert all(set(t) <= set(DEFAULT_TEXT.alphabet) for _, t in got) and any(t for _, t in got)
    # Dynamic quantisation takes its activation ranges from each call's whole batch, so an int8 text can depend on
    # which files share the batch (not so the float one's); the same batches give the same texts.
    args = ["--int8", "--threads", "1", "--max-piece-seconds", str(PIECE_SECONDS), *map(str, audio)]
    assert main(["transcribe", "--model", str(out), *args]) == 0
    assert capsys.readouterr().out == "".join(f"{p}\t{t}\n" for p, t in got)


def test_lstm_encoder_exports_too(tmp_path, audio):
    ckpt = save_checkpoint(talkative_model(encoder="lstm", blank_bias=0.0), tmp_path / "lstm.pt")
    export(ckpt, tmp_path / "exp")
    want = transcribe(ckpt, audio[:3], device="cpu")
    assert runtime_transcribe(tmp_path / "exp", audio[:3]) == want and any(t for _, t in want)


def test_user_mistakes_are_one_line(exported, tmp_path, capsys):
    _, ckpt, out = exported
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    cases = [([str(tmp_path / "missing.pt")], "missing.pt: no such checkpoint"),
             ([str(garbage)], "garbage.pt: not a fastasr checkpoint"),
             ([str(ckpt), "--out", str(taken)], "taken: exists and is not a fastasr export directory")]
    for args, message in cases:
        args = args if "--out" in args else [*args, "--out", str(tmp_path / "exp")]
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (taken / "notes.txt").read_text() == "mine" and not (tmp_path / "exp").exists()
    with pytest.raises(UserError, match="choose from"):
        export(ckpt, tmp_path / "exp", quantize="int4")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_export_replaces_an_earlier_export(exported, tmp_path):
    _, ckpt, out = exported
    again = tmp_path / "again"
    shutil.copytree(out, again)
    export(ckpt, again)  # float only this time: the int8 graphs of the earlier export go
    assert not list(again.glob("*.int8.onnx"))
    meta = json.loads((again / "model.json").read_text())
    assert list(meta["graphs"]) == ["float"]
    a = onnx.load(str(out / "joiner.onnx")).graph.initializer
    b = onnx.load(str(again / "joiner.onnx")).graph.initializer
    assert all(np.array_equal(onnx.numpy_helper.to_array(x), onnx.numpy_helper.to_array(y)) for x, y in zip(a, b))
