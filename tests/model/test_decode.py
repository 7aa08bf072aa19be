"""Batched greedy decoding against a one-utterance-at-a-time reference; beam search sanity."""

import torch
from asr_helpers import tiny_model

from fastasr.model.decode import beam_search, greedy_batch


def reference_greedy(model, enc, T, max_symbols):
    """The textbook loop: one utterance, one frame and one symbol at a time."""
    hyp, last, state = [], model.blank, None
    pred, state = model.predict(torch.tensor([[last]]), state)
    for t in range(T):
        for _ in range(max_symbols):
            k = int(model.joiner(enc[t], pred[0, 0]).argmax())
            if k == model.blank:
                break
            hyp.append(k)
            pred, state = model.predict(torch.tensor([[k]]), state)
    return hyp


def emitting_model():
    model = tiny_model()
    with torch.no_grad():  # push labels up so the random model emits plenty of symbols, often several per frame
        model.joiner.out.bias[1:] += 2.0
    return model


@torch.no_grad()
def test_greedy_batch_matches_reference():
    model = emitting_model()
    torch.manual_seed(1)
    lens = torch.tensor([80, 33, 57, 8, 64])
    feats = torch.randn(5, 80, 80) * (torch.arange(80)[None, :, None] < lens[:, None, None])
    enc, enc_lens = model.encode(feats, lens)
    for max_symbols in (1, 3):
        hyps = greedy_batch(model, enc, enc_lens, max_symbols=max_symbols)
        total = 0
        for b in range(5):
            ref = reference_greedy(model, enc[b], int(enc_lens[b]), max_symbols)
            assert hyps[b] == ref, (b, hyps[b], ref)
            total += len(ref)
        assert total > 0


@torch.no_grad()
def test_beam_search_returns_valid_tokens_and_beats_nothing():
    model = emitting_model()
    feats, lens = torch.randn(1, 40, 80), torch.tensor([40])
    enc, enc_lens = model.encode(feats, lens)
    hyp = beam_search(model, enc[0], int(enc_lens[0]), beam=4, max_symbols=3)
    assert all(0 < k < model.config.vocab_size for k in hyp)
    assert len(hyp) <= 3 * int(enc_lens[0])


@torch.no_grad()
def test_beam_search_finds_the_obvious_answer():
    """A joiner that always prefers label 3 once then blank: beam search and greedy agree."""
    model = tiny_model()
    with torch.no_grad():
        model.joiner.out.weight.zero_()
        model.joiner.out.bias.zero_()
        model.joiner.out.bias[0] = 5.0  # blank dominates: the answer is the empty sequence
    feats, lens = torch.randn(2, 24, 80), torch.tensor([24, 16])
    enc, enc_lens = model.encode(feats, lens)
    assert greedy_batch(model, enc, enc_lens) == [[], []]
    assert beam_search(model, enc[0], int(enc_lens[0]), beam=3) == []
