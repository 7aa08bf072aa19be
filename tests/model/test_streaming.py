"""Streaming Conformer: the cached chunk step equals the chunk-masked whole-utterance forward it replaces; the
chunk mask sees no future; dynamic chunk training draws from torch's RNG; a non-streaming model is unchanged."""

import math
from dataclasses import replace

import pytest
import torch
from asr_helpers import tiny_model

from fastasr.errors import UserError
from fastasr.model.config import ModelConfig
from fastasr.model.streaming import StreamingEncoder, chunk_attention_mask
from fastasr.model.transducer import Transducer, count_parameters, parameter_count
from fastasr.training.config import preset


def streaming_model(**over) -> Transducer:
    return tiny_model(streaming=True, **{"conv_kernel": 5, **over})


def ragged_batch(lens: list[int], n_mels: int = 80, dtype=torch.float64, seed: int = 1):
    """Features with non-zero padding: a streaming model must never read it."""
    g = torch.Generator().manual_seed(seed)
    T = max(lens)
    return torch.randn(len(lens), T, n_mels, generator=g, dtype=dtype), torch.tensor(lens)


def stream(model: Transducer, feats, lens, chunk: int, left: int):
    """Feed `feats` chunk by chunk through the cached step; the encoder output (B, chunks·chunk, D) and lengths."""
    s = StreamingEncoder(model.encoder, chunk, left)
    n = s.feature_frames
    chunks = -(-feats.shape[1] // n)
    padded = torch.cat([feats, feats.new_full((feats.shape[0], chunks * n - feats.shape[1], feats.shape[2]), 7.0)],
                       1)  # padding that is not zero either
    caches, outs, out_lens = s.initial_caches(feats.shape[0], dtype=feats.dtype), [], 0
    for k in range(chunks):
        piece_lens = (lens - k * n).clamp(0, n)
        out, valid, caches = s.step(padded[:, k * n:(k + 1) * n], piece_lens, caches)
        assert out.shape[1] == chunk
        outs.append(out)
        out_lens = out_lens + valid
    return torch.cat(outs, 1), out_lens, caches


@pytest.mark.parametrize("subsampling", [4, 8])
@pytest.mark.parametrize("chunk,left", [(1, 2), (2, 1), (3, 0), (4, 2), (5, -1), (8, 4)])
def test_cached_step_equals_masked_forward_float64(subsampling, chunk, left):
    """The key property: a ragged batch (lengths not multiples of the chunk, one shorter than a chunk) streamed
    chunk by chunk gives the masked whole-utterance forward's output to float64 rounding, padding zero."""
    model = streaming_model(subsampling=subsampling).double()
    feats, lens = ragged_batch([211, 64, 5, 150, 97])
    ref, ref_lens = model.encoder(feats, lens, chunk_frames=chunk, left_chunks=left)  # (B, T', D)
    got, got_lens, caches = stream(model, feats, lens, chunk, left)
    assert got_lens.tolist() == ref_lens.tolist() == [-(-n // subsampling) for n in lens.tolist()]
    for b, n in enumerate(ref_lens.tolist()):
        diff = (got[b, :n] - ref[b, :n]).abs().max().item()
        assert diff < 1e-10, (b, n, diff)
        assert not got[b, n:].any(), f"utterance {b}: padded frames are not zero"
    W = caches.keys.shape[3]
    assert W == (left * chunk if left >= 0 else got.shape[1]), W  # bounded by left_chunks × chunk


def test_cached_step_equals_masked_forward_float32():
    model = streaming_model()
    feats, lens = ragged_batch([300, 171, 40], dtype=torch.float32)
    for chunk, left in [(4, 2), (7, 1), (16, -1)]:
        ref, ref_lens = model.encoder(feats, lens, chunk_frames=chunk, left_chunks=left)
        got, got_lens, _ = stream(model, feats, lens, chunk, left)
        assert got_lens.tolist() == ref_lens.tolist()
        for b, n in enumerate(ref_lens.tolist()):
            torch.testing.assert_close(got[b, :n], ref[b, :n], atol=1e-5, rtol=1e-5)


def test_batched_stream_equals_alone():
    """Caches respect each utterance's own frames: streaming one utterance alone gives its frames in the batch."""
    model = streaming_model().double()
    feats, lens = ragged_batch([90, 33, 61])
    got, got_lens, _ = stream(model, feats, lens, 3, 1)
    for b, n in enumerate(lens.tolist()):
        alone, alone_lens, _ = stream(model, feats[b:b + 1, :n], lens[b:b + 1], 3, 1)
        m = int(alone_lens)
        assert m == int(got_lens[b])
        assert (alone[0, :m] - got[b, :m]).abs().max().item() < 1e-10


def test_chunk_mask_sees_no_future():
    """With chunk masks, an encoder frame in chunk k depends on no feature after chunk k's last window."""
    model = streaming_model().double()
    feats, lens = ragged_batch([160])
    chunk, factor = 4, model.config.subsampling
    ref, _ = model.encoder(feats, lens, chunk_frames=chunk, left_chunks=-1)
    for k in range(ref.shape[1] // chunk - 1):  # the last chunk has no future
        changed = feats.clone()
        changed[:, (k + 1) * chunk * factor:] += 3.0
        out, _ = model.encoder(changed, lens, chunk_frames=chunk, left_chunks=-1)
        assert torch.equal(out[:, :(k + 1) * chunk], ref[:, :(k + 1) * chunk]), k
        assert not torch.equal(out, ref)


def test_chunk_attention_mask():
    valid = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    m = chunk_attention_mask(valid, 2, 1)[:, 0]  # (B, T, T)
    assert m[0, 5].tolist() == [False, False, True, True, True, True, False]  # chunks 1..2 of chunk 2
    assert m[0, 0].tolist() == [True, True] + [False] * 5
    assert m[1, 2].tolist() == [True, True, True] + [False] * 4  # never padding
    assert m[1, 6].tolist() == [True, True, True] + [False] * 4  # a padded row attends to something: no NaN
    assert chunk_attention_mask(valid, -1, 1).shape == (2, 1, 1, 7)


def test_dynamic_chunk_training_is_reproducible_and_eval_is_full_context():
    model = streaming_model(chunk_frames="1,2,-1").double()
    feats, lens = ragged_batch([120, 80])
    full, _ = model.encoder(feats, lens, chunk_frames=-1)
    outs = {c: model.encoder(feats, lens, chunk_frames=c)[0] for c in (1, 2)}
    assert torch.equal(model.encoder(feats, lens)[0], full)  # eval, no chunk size: full context
    model.train()  # dropout is 0: train mode differs only by the drawn chunk size
    torch.manual_seed(5)
    drawn = [model.encoder(feats, lens)[0] for _ in range(30)]
    torch.manual_seed(5)
    again = [model.encoder(feats, lens)[0] for _ in range(30)]
    assert all(torch.equal(a, b) for a, b in zip(drawn, again))
    hits = [next(c for c, o in {**outs, -1: full}.items() if torch.equal(o, d)) for d in drawn]
    assert set(hits) == {1, 2, -1}, hits


def test_non_streaming_model_is_unchanged():
    """Outputs of fixed weights computed by the encoder before streaming existed (commit 20d1173), and no RNG use."""
    expected = {4: ([18, 12], [-13.221355400054536, 74.47131551687613, 0.5847606773380996, 0.3665311971849313,
                               -0.20753234719970515]),
                8: ([9, 6], [-18.03526711754622, 390.8347848670505, 1.7336145454321894, -0.9577457719447157,
                             0.26752809965986285])}
    for sub, (want_lens, want) in expected.items():
        model = tiny_model(subsampling=sub, conv_kernel=5).double()
        with torch.no_grad():
            for i, (name, p) in enumerate(model.state_dict().items()):
                base = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.731 + i) / math.sqrt(p.shape[-1])
                p.copy_((1 + 0.1 * base if name.endswith(("norm.weight", "norm2.weight")) else base).view(p.shape))
        t, f = torch.arange(70, dtype=torch.float64), torch.arange(80, dtype=torch.float64)
        feats = torch.sin(t[:, None] * 0.13 + f[None] * 0.29)[None] * torch.tensor([1.0, 0.5])[:, None, None]
        lens = torch.tensor([70, 45])
        enc, enc_lens = model.encode(feats * (t[None, :, None] < lens[:, None, None]), lens)
        w = torch.cos(torch.arange(enc.numel(), dtype=torch.float64) * 0.017).view(enc.shape)
        got = [enc.sum().item(), (enc ** 2).sum().item(), (enc * w).sum().item(), enc[0, 3, 5].item(),
               enc[1, 5, 7].item()]
        assert enc_lens.tolist() == want_lens
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (sub, got)
        model.train()
        state = torch.get_rng_state()
        model.encode(feats, lens)
        assert torch.equal(torch.get_rng_state(), state)  # a non-streaming model draws no chunk size
        with pytest.raises(ValueError, match="streaming"):
            model.encode(feats, lens, chunk_frames=4)


def test_streaming_parameter_count_and_settings():
    for over in ({}, {"subsampling": 4, "conv_kernel": 31}):
        c = replace(streaming_model(**over).config)
        assert parameter_count(c) == count_parameters(Transducer(c))
    assert ModelConfig().streaming is False  # checkpoints without the fields load as non-streaming
    assert ModelConfig.parse_chunk_frames("8,16,32,-1") == (8, 16, 32, -1)
    for bad in ("", "0", "8,-2", "a", "8,,16"):
        assert ModelConfig.parse_chunk_frames(bad) is None, bad
    c = preset("tiny", ["model.streaming=true", "model.chunk_frames=4,-1", "model.left_chunks=-1"]).model
    assert (c.streaming, c.chunk_frames, c.left_chunks) == (True, "4,-1", -1)
    with pytest.raises(UserError, match=r"^model.chunk_frames=8,0: wants .*-1"):
        preset("tiny", ["model.chunk_frames=8,0"])
    with pytest.raises(UserError, match=r"^model.left_chunks=-2: wants"):
        preset("tiny", ["model.left_chunks=-2"])
    with pytest.raises(ValueError, match="streaming"):
        Transducer(replace(c, vocab_size=34, encoder="lstm"))


def test_checkpoints_carry_the_streaming_settings(tmp_path):
    """A streaming model's file loads as streaming; one written before the settings existed loads as
    non-streaming; a file's malformed streaming settings are one UserError naming it."""
    from export_helpers import save_checkpoint

    from fastasr.model.checkpoint import load_model

    model = streaming_model(chunk_frames="2,-1", left_chunks=1)
    feats, lens = ragged_batch([60, 37], dtype=torch.float32)
    loaded, _, c = load_model(save_checkpoint(model, tmp_path / "s.pt"))
    assert (c.streaming, c.chunk_frames, c.left_chunks) == (True, "2,-1", 1)
    assert torch.equal(loaded.encode(feats, lens, chunk_frames=2)[0], model.encode(feats, lens, chunk_frames=2)[0])

    old = torch.load(save_checkpoint(tiny_model(), tmp_path / "old.pt"), weights_only=True)
    for name in ("streaming", "chunk_frames", "left_chunks"):
        del old["config"]["model"][name]
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt")[2].streaming is False

    bad = torch.load(tmp_path / "s.pt", weights_only=True)
    bad["config"]["model"]["chunk_frames"] = "2,0"
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"bad.pt: model settings streaming=true.*chunk_frames='2,0'"):
        load_model(tmp_path / "bad.pt")
