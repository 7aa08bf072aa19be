"""A streaming model transcribed while its audio arrives (fastasr.runtime.stream): the export's streaming encoder
graph and the checkpoint's chunk step, fed a file in pieces of any size, give the greedy text and token frames of
the chunk-masked whole-utterance forward at the same chunk ("simulated streaming", `fastasr eval --chunk-ms`);
`fastasr transcribe --stream` prints it; export and transcribe refuse what cannot stream in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from export_helpers import patchwork, save_checkpoint, talkative_model

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.export import export
from fastasr.inference.streaming import CheckpointStreamEngine
from fastasr.model.checkpoint import load_model
from fastasr.model.decode import greedy_batch_timed
from fastasr.model.transducer import log_mel
from fastasr.runtime import OnnxTransducer

pytest.importorskip("onnxruntime")

FILES = ((1, 2.3), (2, 4.07), (3, 0.31), (4, 0.02))  # (seed, seconds): the last two shorter than a chunk


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    model = talkative_model(frontend="kaldi", streaming=True, chunk_frames="1,2,-1", left_chunks=2)
    ckpt = save_checkpoint(model, d / "stream.pt")
    frame_ms = 10 * model.config.subsampling
    out = export(ckpt, d / "export", chunk_ms=2 * frame_ms)
    wavs = []
    for seed, seconds in FILES:
        wavs.append(d / f"f{seed}.wav")
        sf.write(str(wavs[-1]), patchwork(seconds, seed), 16000, subtype="FLOAT")
    return ckpt, out, wavs, frame_ms


def simulated(ckpt, x: np.ndarray, chunk_frames: int):
    """Token ids and frames of the chunk-masked whole-utterance forward, decoded greedily (the reference)."""
    model, tokenizer, config = load_model(ckpt)
    feats, lens = log_mel(config)(torch.from_numpy(x)[None], torch.tensor([x.size]))
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens, chunk_frames=chunk_frames)
    ids, frames = greedy_batch_timed(model, enc, enc_lens)
    return tokenizer.decode(ids[0]), ids[0], frames[0]


def fed(engine, x: np.ndarray, seed: int):
    """The stream's final result, the samples fed in pieces of random sizes (1 sample to 0.3 s)."""
    stream, rng, i = engine.stream(), np.random.default_rng(seed), 0
    while i < x.size:
        n = int(rng.integers(1, 4800))
        stream.accept_waveform(x[i:i + n])
        i += n
    return stream.finish()


def test_stream_equals_simulated_streaming(streaming):
    ckpt, out, wavs, frame_ms = streaming
    runtime = OnnxTransducer(out)
    assert runtime.streaming.chunk_frames == 2
    checkpoint = CheckpointStreamEngine(ckpt, chunk_ms=2 * frame_ms)
    talked = 0
    for (seed, _), wav in zip(FILES, wavs):
        x = sf.read(str(wav), dtype="float32")[0]
        text, ids, frames = simulated(ckpt, x, 2)
        times = [round(f * frame_ms / 1000, 3) for f in frames]
        for engine in (runtime, checkpoint):
            got = fed(engine, x, seed)
            assert (got.text, got.tokens, got.token_times) == (text, ids, times), (seed, type(engine).__name__)
        talked += bool(ids)
    assert talked >= 2  # the model says different things for different audio, not nothing


def test_other_chunk_sizes_and_partial_results(streaming):
    ckpt, _, wavs, frame_ms = streaming
    x = sf.read(str(wavs[1]), dtype="float32")[0]
    for chunk in (1, 3):
        engine = CheckpointStreamEngine(ckpt, chunk_ms=chunk * frame_ms)
        text, ids, _ = simulated(ckpt, x, chunk)
        stream, partials = engine.stream(), []
        for i in range(0, x.size, 1600):
            stream.accept_waveform(x[i:i + 1600])
            partials.append(stream.text)
        assert stream.finish().text == text
        # partial results only grow, each a prefix of the final text
        assert all(text.startswith(p) for p in partials) and partials == sorted(partials, key=len)
        assert 0 < len(partials[len(partials) // 2]) < len(text)


def test_resampled_stream_is_close_to_16k(streaming):
    """A 48-kHz stream is resampled as it arrives (soxr's stream resampler) and says nearly what 16 kHz says."""
    import soxr

    ckpt, out, _, _ = streaming
    engine = OnnxTransducer(out)
    x48 = soxr.resample(patchwork(3.0, seed=7), 16000, 48000).astype(np.float32)
    stream = engine.stream(sample_rate=48000)
    for i in range(0, x48.size, 4800):
        stream.accept_waveform(x48[i:i + 4800])
    got = stream.finish().text
    want = fed(engine, soxr.resample(x48, 48000, 16000).astype(np.float32), 0).text
    assert got and sum(a == b for a, b in zip(got, want)) >= 0.8 * len(want)


def test_cli_stream_and_timestamps(streaming, capsys):
    ckpt, out, wavs, frame_ms = streaming
    wav = wavs[1]
    x = sf.read(str(wav), dtype="float32")[0]
    text, ids, frames = simulated(ckpt, x, 2)
    for source in (["--model", str(out)], ["--checkpoint", str(ckpt), "--chunk-ms", str(2 * frame_ms)]):
        assert main(["transcribe", *source, "--stream", "--timestamps", str(wav)]) == 0
        captured = capsys.readouterr()
        path, got, words = captured.out.rstrip("\n").split("\t")
        assert (path, got) == (str(wav), text)
        words = json.loads(words)
        assert " ".join(w for w, _, _ in words) == " ".join(text.split())
        assert words[0][1] == round(frames[0] * frame_ms / 1000, 3)
        assert all(a < b for _, a, b in words)
        partial = [line.split("\t") for line in captured.err.splitlines() if line.startswith(str(wav))]
        assert len(partial) >= 2 and all(text.startswith(p[2]) for p in partial)


def test_offline_timestamps_follow_the_cut_pieces(tmp_path, streaming):
    """--timestamps on a recording cut into pieces: the words of a later piece carry its start."""
    ckpt, out, wavs, _ = streaming
    long = tmp_path / "long.wav"
    sf.write(str(long), np.concatenate([patchwork(2.0, 11), patchwork(2.0, 12)]), 16000, subtype="FLOAT")
    for source in (["--model", str(out)], ["--checkpoint", str(ckpt)]):
        result = subprocess.run([sys.executable, "-m", "fastasr", "transcribe", *source, "--timestamps",
                                 "--max-piece-seconds", "1.0", str(long)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        _, text, words = result.stdout.rstrip("\n").split("\t")
        words = json.loads(words)
        assert " ".join(w for w, _, _ in words) == " ".join(text.split())
        assert words[-1][2] > 3.0 and all(a1 <= a2 for (_, a1, _), (_, a2, _) in zip(words, words[1:]))


def test_what_cannot_stream_is_one_line(tmp_path, streaming, capsys):
    ckpt, out, wavs, frame_ms = streaming
    offline = save_checkpoint(talkative_model(frontend="kaldi"), tmp_path / "offline.pt")
    with pytest.raises(UserError, match="not a streaming model"):
        export(offline, tmp_path / "x", chunk_ms=640)
    with pytest.raises(UserError, match="multiple of"):
        export(ckpt, tmp_path / "x", chunk_ms=frame_ms * 1.5)
    unbounded = save_checkpoint(talkative_model(frontend="kaldi", streaming=True, left_chunks=-1),
                                tmp_path / "unbounded.pt")
    with pytest.raises(UserError, match="--left-chunks"):
        export(unbounded, tmp_path / "x")
    assert export(unbounded, tmp_path / "bounded", left_chunks=3).is_dir()
    offline_export = export(offline, tmp_path / "offline_export")
    assert main(["transcribe", "--model", str(offline_export), "--stream", str(wavs[0])]) == 2
    assert "does not stream" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(out), "--stream", "--chunk-ms", str(4 * frame_ms),
                 str(wavs[0])]) == 2
    assert "exported with" in capsys.readouterr().err
    assert main(["transcribe", "--checkpoint", str(offline), "--stream", str(wavs[0])]) == 2
    assert "not a streaming model" in capsys.readouterr().err


def test_stream_runs_without_torch(streaming):
    _, out, wavs, _ = streaming
    code = ("import sys; sys.modules['torch'] = None; import soundfile as sf; from fastasr.runtime import "
            f"OnnxTransducer; m = OnnxTransducer({str(out)!r}); s = m.stream(); "
            f"s.accept_waveform(sf.read({str(wavs[0])!r}, dtype='float32')[0]); print(s.finish().text)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    x = sf.read(str(wavs[0]), dtype="float32")[0]
    assert result.stdout.strip() == fed(OnnxTransducer(out), x, 0).text
