"""RNN-T decoding: batched greedy search, and a simple time-synchronous beam search.

Both take the projected encoder output (B, T, H) and its lengths from `Transducer.encode` and return token id lists.
Both cap the symbols emitted per encoder frame (`max_symbols`), so a model that never predicts blank still stops.
"""

from __future__ import annotations

import math

import torch

from fastasr.kernels.scalar import logaddexp as _logaddexp
from fastasr.model.transducer import Transducer
from fastasr.text.tokenizer import AnyTokenizer

MAX_SYMBOLS = 10  # labels per encoder frame at most (an export records it for the runtime's greedy search)


def _select_state(mask: torch.Tensor, new, old):
    """LSTM (h, c) of shape (layers, B, H): take `new` where mask (B,) is True."""
    m = mask[None, :, None]
    return tuple(torch.where(m, n, o) for n, o in zip(new, old))


@torch.no_grad()
def greedy_batch(model: Transducer, enc: torch.Tensor, enc_lens: torch.Tensor,
                 max_symbols: int = MAX_SYMBOLS) -> list[list[int]]:
    """Greedy decoding of a whole batch at once: one joiner call per (frame, symbol) step for all utterances."""
    return greedy_batch_timed(model, enc, enc_lens, max_symbols)[0]


@torch.no_grad()
def greedy_batch_timed(model: Transducer, enc: torch.Tensor, enc_lens: torch.Tensor,
                       max_symbols: int = MAX_SYMBOLS) -> tuple[list[list[int]], list[list[int]]]:
    """greedy_batch's token ids, and for each token the encoder frame that emitted it."""
    B, T, _ = enc.shape
    blank = model.blank
    last = torch.full((B, 1), blank, dtype=torch.long, device=enc.device)
    pred, state = model.predict(last)  # (B, 1, H)
    pred = pred[:, 0]
    hyps: list[list[int]] = [[] for _ in range(B)]
    frames: list[list[int]] = [[] for _ in range(B)]
    for t in range(T):
        active = t < enc_lens  # (B,)
        if not bool(active.any()):
            break
        for _ in range(max_symbols):
            logits = model.joiner(enc[:, t], pred)  # (B, V)
            best = logits.argmax(dim=-1)  # (B,)
            emit = active & (best != blank)
            if not bool(emit.any()):
                break
            for b in emit.nonzero()[:, 0].tolist():
                hyps[b].append(int(best[b]))
                frames[b].append(t)
            new_pred, new_state = model.predict(best[:, None], state)
            pred = torch.where(emit[:, None], new_pred[:, 0], pred)
            state = _select_state(emit, new_state, state)
            active = emit  # frames move on for utterances that emitted blank
    return hyps, frames


@torch.no_grad()
def beam_search(model: Transducer, enc: torch.Tensor, enc_len: int, beam: int = 4,
                max_symbols: int = MAX_SYMBOLS) -> list[int]:
    """Time-synchronous beam search for one utterance (enc (T, H)); equal prefixes are merged by log-add.

    At each frame every hypothesis either ends the frame with blank or extends by a label (up to `max_symbols`
    labels per frame); the `beam` best hypotheses that ended the frame carry on to the next.
    """
    blank = model.blank
    cache: dict[tuple, tuple[torch.Tensor, tuple]] = {}

    def pred_of(prefix: tuple) -> tuple[torch.Tensor, tuple]:
        if prefix not in cache:
            last = prefix[-1] if prefix else blank
            parent_state = pred_of(prefix[:-1])[1] if prefix else None
            out, st = model.predict(torch.tensor([[last]], device=enc.device), parent_state)
            cache[prefix] = (out[0, 0], st)
        return cache[prefix]

    beams: dict[tuple, float] = {(): 0.0}
    for t in range(int(enc_len)):
        ended: dict[tuple, float] = {}
        frontier = beams
        for _ in range(max_symbols + 1):
            if not frontier:
                break
            prefixes = list(frontier)
            preds = torch.stack([pred_of(p)[0] for p in prefixes])  # (N, H)
            logp = model.joiner(enc[t].expand_as(preds), preds).float().log_softmax(-1)  # (N, V)
            expansions: dict[tuple, float] = {}
            k = min(beam, logp.shape[1] - 1)
            top_lp, top_id = logp[:, 1:].topk(k, dim=-1)  # (N, k) labels only
            for i, p in enumerate(prefixes):
                score = frontier[p]
                ended[p] = _logaddexp(ended.get(p, -math.inf), score + float(logp[i, blank]))
                for lp, tok in zip(top_lp[i].tolist(), top_id[i].tolist()):
                    expansions[p + (tok + 1,)] = score + lp
            best_ended = sorted(ended.values(), reverse=True)[:beam]
            floor = best_ended[-1] if len(best_ended) == beam else -float("inf")
            # An expansion whose score is already below the beam-th ended hypothesis can only get worse.
            kept = sorted(((s, p) for p, s in expansions.items() if s > floor), reverse=True)[:beam]
            frontier = {p: s for s, p in kept}
        beams = dict(sorted(ended.items(), key=lambda kv: kv[1], reverse=True)[:beam])
    return list(max(beams.items(), key=lambda kv: kv[1])[0])


def decode(model: Transducer, enc: torch.Tensor, enc_lens: torch.Tensor, *, beam: int = 1,
           max_symbols: int = MAX_SYMBOLS) -> list[list[int]]:
    """Greedy (beam=1, batched) or beam search (beam>1, per utterance) over a batch."""
    if beam <= 1:
        return greedy_batch(model, enc, enc_lens, max_symbols=max_symbols)
    return [beam_search(model, enc[b], int(enc_lens[b]), beam=beam, max_symbols=max_symbols)
            for b in range(enc.shape[0])]


@torch.no_grad()
def transcribe_loader(model: Transducer, tokenizer: AnyTokenizer, frontend, batches, device, *, beam: int = 1,
                      limit: int | None = None, chunk_frames: int | None = None):
    """(key, reference, hypothesis) for every utterance of `batches` (an iterable of Batch). chunk_frames: a
    streaming model's attention chunk in encoder frames (simulated streaming: the chunk-masked whole-utterance
    forward, equal to the cached chunk step); None: full context."""
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            batch = batch.to(device)
            feats, feat_lens = frontend(batch.audio, batch.audio_lens)
            enc, enc_lens = model.encode(feats, feat_lens, chunk_frames)
            for key, ref, ids in zip(batch.keys, batch.texts, decode(model, enc, enc_lens, beam=beam)):
                yield key, ref, tokenizer.decode(ids)
                seen += 1
                if limit is not None and seen >= limit:
                    return
    finally:
        model.train(was_training)
