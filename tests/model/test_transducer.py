"""Model shapes and lengths, padding invariance, config presets and overrides, lr schedule."""


import pytest
import torch
from asr_helpers import tiny_model

from fastasr.errors import UserError
from fastasr.model.transducer import ConvSubsampling
from fastasr.training.config import Config, apply_overrides, preset


@pytest.mark.parametrize("factor", [4, 8])
def test_subsampling_lengths_exact(factor):
    sub = ConvSubsampling(80, 4, 16, factor)
    for T in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 101]:
        y, lens = sub(torch.randn(1, T, 80), torch.tensor([T]))
        assert y.shape[1] == int(lens[0]), (T, y.shape, lens)
        assert int(lens[0]) == -(-T // factor), (T, lens)  # ceil(T / factor)


@pytest.mark.parametrize("encoder", ["conformer", "lstm"])
def test_batched_encoding_equals_alone(encoder):
    """Padding never changes a valid frame: each utterance encodes in a batch exactly as it does alone."""
    model = tiny_model(encoder=encoder)
    lens = torch.tensor([37, 64, 5, 50])
    feats = torch.randn(4, 64, 80) * (torch.arange(64)[None, :, None] < lens[:, None, None])
    enc, enc_lens = model.encode(feats, lens)
    assert enc_lens.tolist() == [-(-n // 8) for n in lens.tolist()]
    for b, n in enumerate(lens.tolist()):
        alone, alone_len = model.encode(feats[b:b + 1, :n], lens[b:b + 1])
        assert int(alone_len) == int(enc_lens[b])
        torch.testing.assert_close(enc[b, :int(alone_len)], alone[0], atol=1e-5, rtol=1e-4)


def test_forward_loss_and_gradients():
    model = tiny_model().train()
    feats, lens = torch.randn(3, 48, 80), torch.tensor([48, 40, 33])
    tokens, token_lens = torch.randint(1, 34, (3, 5)), torch.tensor([5, 3, 1])
    loss = model(feats, lens, tokens, token_lens)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_presets_and_overrides_roundtrip():
    for name in ("tiny", "small", "base"):
        c = preset(name)
        assert Config.from_dict(c.to_dict()) == c
    c = preset("tiny", ["model.d_model=128", "optim.lr=5e-4", "train.amp=false", "model.encoder=lstm"])
    assert (c.model.d_model, c.optim.lr, c.train.amp, c.model.encoder) == (128, 5e-4, False, "lstm")
    with pytest.raises(UserError, match=r"model.dmodel: unknown setting \(did you mean model.d_model\?\)"):
        apply_overrides(c, ["model.dmodel=3"])
    with pytest.raises(UserError, match="model.d_model=abc: wants an integer"):
        apply_overrides(c, ["model.d_model=abc"])
    with pytest.raises(UserError, match="model.dropout=1.5: wants 0 <= p < 1"):
        preset("tiny", ["model.dropout=1.5"])
    with pytest.raises(UserError, match="divisible"):
        preset("tiny", ["model.d_model=98"])


def test_lr_schedule():
    from fastasr.training.loop import lr_at

    o = preset("tiny").optim
    assert lr_at(0, 0.0, o) == pytest.approx(o.lr / o.warmup_steps)
    assert lr_at(o.warmup_steps - 1, 0.0, o) == pytest.approx(o.lr)
    assert lr_at(10**6, 1.0, o) == pytest.approx(o.lr * o.min_lr_ratio)
    lrs = [lr_at(o.warmup_steps + i, i / 100, o) for i in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
