"""Gradient accumulation: K micro-batches in one optimiser step equal one K-times-larger batch, and a non-finite
micro-batch cancels the whole step.

The reference is the ordinary one-batch step on the concatenated batch, in float64 with dropout and SpecAugment off,
so the only differences left are summation order and padding (each half is padded to its own maximum): the
conformer masks padding, so those agree to ~1e-12; the tolerance 1e-9 leaves room for AdamW's division by
sqrt(v) + eps, which amplifies the tiny gradient differences of near-zero gradients at the first step.
"""

import copy

import pytest
import torch
from asr_helpers import NoAugment, batch, tiny_model

from fastasr.data.sample import Batch
from fastasr.model.transducer import log_mel
from fastasr.training.config import OptimConfig
from fastasr.training.step import StepParts, make_optimizer, train_step


def halves(b: Batch, cut: int) -> list[Batch]:
    """b's first `cut` utterances and the rest, each padded to its own maximum."""
    out = []
    for rows in (slice(0, cut), slice(cut, None)):
        a_lens, t_lens = b.audio_lens[rows], b.token_lens[rows]
        out.append(Batch(b.audio[rows, : int(a_lens.max())], a_lens, b.tokens[rows, : int(t_lens.max())], t_lens,
                         b.keys[rows], b.texts[rows], b.epoch, b.index))
    return out


def parts_for(model) -> StepParts:
    frontend = log_mel(model.config).double()
    optimizer = make_optimizer(model, OptimConfig(weight_decay=0.01))
    return StepParts(model, model, optimizer, frontend, NoAugment(), torch.autocast("cpu", enabled=False),
                     grad_clip=1e9, world=1, device=torch.device("cpu"))


@pytest.fixture
def whole():
    # Unequal halves (3 + 2 utterances of different lengths): the weighting by utterance count is what is tested.
    return batch([8000, 4500, 6000, 3000, 7000], [4, 2, 3, 1, 4], seed=1)


def test_two_micro_batches_equal_one_batch_of_both(whole):
    reference = tiny_model().double().train()
    accumulated = copy.deepcopy(reference)
    ref_loss, ref_norm, ref_skip = train_step(parts_for(reference), [whole], lr=1e-3)
    acc_loss, acc_norm, acc_skip = train_step(parts_for(accumulated), halves(whole, 3), lr=1e-3)
    assert float(ref_skip) == float(acc_skip) == 0.0
    torch.testing.assert_close(acc_loss, ref_loss, atol=1e-6, rtol=1e-6)  # the float32 step loss
    torch.testing.assert_close(acc_norm, ref_norm, atol=1e-10, rtol=1e-10)
    before = tiny_model().double().state_dict()
    moved = 0
    for name, w in reference.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[name], w, atol=1e-9, rtol=1e-9, msg=name)
        moved += not torch.equal(w, before[name])
    assert moved > 10  # the step did change the weights (lr=1e-3 moves every parameter with a gradient)


def test_a_non_finite_micro_batch_skips_the_whole_step(whole):
    model = tiny_model().double().train()
    before = copy.deepcopy(model.state_dict())
    first, second = halves(whole, 3)
    second.audio[0, :100] = float("nan")
    parts = parts_for(model)
    _, _, skip = train_step(parts, [first, second], lr=1e-3)
    assert float(skip) == 1.0
    for name, w in model.state_dict().items():
        assert torch.equal(w, before[name]), name
    assert all(float(s["step"]) == 0 for s in parts.optimizer.state_dict()["state"].values())


def test_the_delay_penalty_reaches_the_loss(whole):
    """train.delay_penalty: the step's loss is the fused loss with k2's delay penalty, computed here directly."""
    from dataclasses import replace

    from fastasr.loss import fused_rnnt_loss

    model = tiny_model().double().train()
    torch.manual_seed(0)
    plain, _, _ = train_step(replace(parts_for(copy.deepcopy(model)), delay_penalty=0.0), [whole], lr=0.0)
    penalised, _, _ = train_step(replace(parts_for(copy.deepcopy(model)), delay_penalty=0.5), [whole], lr=0.0)
    feats, feat_lens = log_mel(model.config).double()(whole.audio, whole.audio_lens)
    model.eval()  # dropout off for the direct computation; the tiny model's dropout is 0 anyway
    enc, enc_lens = model.encode(feats, feat_lens)
    start = torch.full((whole.tokens.shape[0], 1), model.blank, dtype=whole.tokens.dtype)
    pred, _ = model.predict(torch.cat([start, whole.tokens], dim=1))
    out = model.joiner.out
    want = fused_rnnt_loss(enc, pred, out.weight, out.bias, whole.tokens, enc_lens, whole.token_lens,
                           blank=model.blank, reduction="mean", activation="tanh", delay_penalty=0.5)
    assert float(penalised) == pytest.approx(float(want), rel=1e-6)  # the step reports its loss in float32
    assert float(penalised) != pytest.approx(float(plain), rel=1e-3)
