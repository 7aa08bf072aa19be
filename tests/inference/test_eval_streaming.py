"""`fastasr eval --chunk-ms`: a streaming model scored in simulated streaming gives, per utterance, the text that
its cached chunk-by-chunk encoder (fastasr.model.streaming.StreamingEncoder) gives, decoded greedily; a model
that cannot stream, or a chunk that is no whole number of encoder frames, is one line."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
from asr_helpers import make_config, make_shards

from fastasr.cli import main
from fastasr.data import build_loader
from fastasr.model.checkpoint import load, load_model
from fastasr.model.decode import greedy_batch
from fastasr.model.streaming import StreamingEncoder
from fastasr.model.transducer import log_mel, waveform_of
from fastasr.training.checkpoints import save_atomic
from fastasr.training.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("shards")
    make_shards(data)
    out = {}
    for name, streaming in (("stream", True), ("full", False)):
        run = tmp_path_factory.mktemp(name) / "run"
        config = make_config(max_steps=3)
        model = replace(config.model, streaming=streaming, chunk_frames="1,2,-1", left_chunks=2)
        train(data, run, replace(config, model=model))
        ckpt = load(run / "last.pt")
        ckpt["model"]["joiner.out.bias"][1:] += 3.0  # three steps leave blanks only: make it talk
        save_atomic(ckpt, run / "talkative.pt")
        out[name] = run / "talkative.pt"
    return data, out


def cached_texts(ckpt, data, chunk_frames: int) -> dict[str, str]:
    model, tokenizer, config = load_model(ckpt)
    frontend = log_mel(config)
    stream = StreamingEncoder(model.encoder, chunk_frames)
    texts = {}
    loader = build_loader(data, "test", max_batch_seconds=100.0, num_workers=0, shuffle=False,
                          waveform=waveform_of(config))
    with torch.no_grad():
        for batch in loader:
            feats, lens = frontend(batch.audio, batch.audio_lens)  # (B, T, F)
            step = stream.feature_frames
            pad = -feats.shape[1] % step
            feats = torch.nn.functional.pad(feats, (0, 0, 0, pad))
            caches, outs, counts = stream.initial_caches(feats.shape[0]), [], torch.zeros_like(lens)
            for start in range(0, feats.shape[1], step):
                n = (lens - start).clamp(0, step)
                out, got, caches = stream.step(feats[:, start:start + step], n, caches)
                outs.append(out)
                counts += got
            enc = model.joiner.enc_proj(torch.cat(outs, 1))
            for key, ids in zip(batch.keys, greedy_batch(model, enc, counts)):
                texts[key] = tokenizer.decode(ids)
    return texts


@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_simulated_streaming_is_the_cached_encoder(runs, tmp_path, chunk_frames):
    data, ckpts = runs
    chunk_ms = chunk_frames * 10 * load_model(ckpts["stream"])[2].subsampling
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpts["stream"]), "--data", str(data), "--split", "test", "--device",
                 "cpu", "--workers", "0", "--out", str(out), "--chunk-ms", str(chunk_ms)]) == 0
    assert json.loads((out / "metrics.json").read_text())["chunk_ms"] == chunk_ms
    with open(out / "utterances.tsv", encoding="utf-8") as f:
        got = {row["key"]: row["hypothesis"] for row in csv.DictReader(f, delimiter="\t")}
    want = cached_texts(ckpts["stream"], data, chunk_frames)
    assert got == want and any(want.values())  # the tiny model emits something, so the texts can differ


def test_chunk_ms_needs_a_streaming_model_and_whole_frames(runs, capsys):
    data, ckpts = runs
    args = ["eval", "--data", str(data), "--device", "cpu", "--workers", "0"]
    assert main([*args, "--checkpoint", str(ckpts["full"]), "--chunk-ms", "160"]) == 2
    assert "is not a streaming model" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(ckpts["stream"]), "--chunk-ms", "15"]) == 2
    assert "must be a positive multiple of" in capsys.readouterr().err
