"""A streaming model's export loads in sherpa-onnx's OnlineRecognizer (2.0.1, its NeMo cache-aware interface) as it
is, and decodes the chunks it decodes as fastasr.runtime's stream does: the same text over the same audio.

sherpa-onnx runs in a child process (tests/sherpa_helpers.py: it ends its process on a model it cannot load). It
decodes a window only once a frame beyond it is ready and never the frames left at the end, so each file is given
a tail of zeros and compared with the partial text of fastasr's stream over the same samples: its whole chunks,
the same ones when the frames received leave part of a chunk (sherpa-onnx waits for a frame past a window)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from export_helpers import patchwork, save_checkpoint, talkative_model

from fastasr.inference.export import export
from fastasr.inference.sherpa import metadata
from fastasr.runtime import OnnxTransducer

pytest.importorskip("sherpa_onnx")

SCRIPT = r"""
import json, sys
import numpy as np, sherpa_onnx, soundfile as sf
args = json.loads(sys.argv[1])
recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(**args["files"], num_threads=1,
                                                          decoding_method="greedy_search")
out = []
for path in args["wavs"]:
    x = sf.read(path, dtype="float32")[0]
    stream = recognizer.create_stream()
    for i in range(0, x.size, 1600):
        stream.accept_waveform(16000, x[i:i + 1600])
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    out.append(recognizer.get_result(stream))
print(json.dumps(out, ensure_ascii=False))
"""


def test_sherpa_online_recognizer_gives_the_streams_text(tmp_path):
    model = talkative_model(frontend="kaldi", streaming=True, chunk_frames="1,2,-1", left_chunks=2)
    ckpt = save_checkpoint(model, tmp_path / "stream.pt")
    out = export(ckpt, tmp_path / "export", chunk_ms=20 * model.config.subsampling)
    meta = json.loads((out / "model.json").read_text())
    assert meta["sherpa_onnx"]["recognizer"] == "online"
    props = metadata(out / "streaming_encoder.onnx")
    F = meta["streaming"]["feature_frames"]
    assert props["window_size"] == props["chunk_shift"] == str(F)
    assert "window_size" not in metadata(out / "encoder.onnx")
    runtime = OnnxTransducer(out)
    wavs, want = [], []
    for seed, seconds in ((1, 2.3), (2, 4.07), (5, 1.2)):
        x = np.concatenate([patchwork(seconds, seed), np.zeros((F + 3) * 160 + 400, np.float32)])
        stream = runtime.stream()
        stream.accept_waveform(x)
        if stream.fbank.frames % F == 0:  # a whole last chunk: sherpa-onnx waits for one frame more, fastasr not
            x = np.concatenate([x, np.zeros(160, np.float32)])
            stream = runtime.stream()
            stream.accept_waveform(x)
        assert stream.fbank.frames % F
        want.append(stream.text)  # the whole chunks only, as sherpa-onnx decodes them
        wavs.append(tmp_path / f"f{seed}.wav")
        sf.write(str(wavs[-1]), x, 16000, subtype="FLOAT")
    files = {"encoder": str(out / "streaming_encoder.onnx"), "decoder": str(out / "predictor.onnx"),
             "joiner": str(out / "joiner.onnx"), "tokens": str(out / "tokens.txt")}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps({"files": files, "wavs": list(map(str, wavs))})],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    assert got == want and sum(bool(t) for t in want) >= 2
