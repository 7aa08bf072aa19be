"""Scoring: WER, CER and word accuracy through jiwer, after the same normalisation on both sides.

Accuracy is the standard word accuracy hits / reference words (= 1 - (S + D) / N): unlike 1 - WER it ignores
insertions, so it stays in [0, 1].
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import jiwer
import torch

from fastasr.checkpoint import load_model
from fastasr.decode import decode
from fastasr.model import Transducer
from fastasr.tokenizer import AnyTokenizer

_SPACES = re.compile(r"\s+")


def normalize_for_scoring(text: str) -> str:
    """Lowercase, ё→е, whitespace collapsed: the transcripts are already normalised; this makes sure both are alike."""
    return _SPACES.sub(" ", text.lower().replace("ё", "е")).strip()


def score(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus-level WER, CER, accuracy (fractions) and the counts behind them."""
    assert len(references) == len(hypotheses), f"{len(references)} references vs {len(hypotheses)} hypotheses"
    refs = [normalize_for_scoring(r) for r in references]
    hyps = [normalize_for_scoring(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]  # jiwer cannot score an empty reference
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    if not refs:
        return {"wer": 0.0, "cer": 0.0, "accuracy": 0.0, "utterances": 0, "reference_words": 0}
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    n_words = words.hits + words.substitutions + words.deletions
    n_chars = chars.hits + chars.substitutions + chars.deletions
    return {
        "wer": words.wer,
        "cer": chars.cer,
        "accuracy": words.hits / n_words,
        "utterances": len(refs),
        "reference_words": n_words,
        "word_hits": words.hits,
        "word_substitutions": words.substitutions,
        "word_deletions": words.deletions,
        "word_insertions": words.insertions,
        "reference_chars": n_chars,
        "char_errors": chars.substitutions + chars.deletions + chars.insertions,
        "sentence_accuracy": sum(r == h for r, h in zip(refs, hyps)) / len(refs),
    }


def utterance_errors(reference: str, hypothesis: str) -> int:
    """Word errors (S + D + I) of one utterance."""
    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    if not ref:
        return len(hyp.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def transcribe_loader(model: Transducer, tokenizer: AnyTokenizer, frontend, batches, device, *, beam: int = 1,
                      limit: int | None = None):
    """(key, reference, hypothesis) for every utterance of `batches` (an iterable of Batch)."""
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            batch = batch.to(device)
            feats, feat_lens = frontend(batch.audio, batch.audio_lens)
            enc, enc_lens = model.encode(feats, feat_lens)
            for key, ref, ids in zip(batch.keys, batch.texts, decode(model, enc, enc_lens, beam=beam)):
                yield key, ref, tokenizer.decode(ids)
                seen += 1
                if limit is not None and seen >= limit:
                    return
    finally:
        model.train(was_training)


def write_tsv(rows: list[tuple[str, str, str]], path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(["key", "reference", "hypothesis", "errors"])
        for key, ref, hyp in rows:
            w.writerow([key, ref, hyp, utterance_errors(ref, hyp)])


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test",
             out: str | os.PathLike | None = None, *, beam: int = 1, device: str = "auto",
             max_batch_seconds: float = 200.0, num_workers: int = 1, limit: int | None = None) -> dict:
    """Decode a split with a checkpoint; returns the metrics and, with `out`, writes metrics.json + utterances.tsv."""
    from fastasr.data import build_loader
    from fastasr.model import log_mel

    dev = pick_device(device)
    model, tokenizer, config = load_model(checkpoint, dev)
    frontend = log_mel(config.model).to(dev)
    # The loader's tokens go unused (references are the texts), so it keeps the data's own character tokens: an
    # utterance the model's tokenizer could not encode is still scored, not skipped.
    loader = build_loader(data, split, max_batch_seconds=max_batch_seconds, num_workers=num_workers,
                          shuffle=False, infinite=False, rank=0, world_size=1)
    rows = list(transcribe_loader(model, tokenizer, frontend, loader, dev, beam=beam, limit=limit))
    rows.sort()
    metrics = score([r for _, r, _ in rows], [h for _, _, h in rows])
    metrics.update(split=split, beam=beam, checkpoint=str(checkpoint), tokenizer=tokenizer.describe())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        write_tsv(rows, out / "utterances.tsv")
    return metrics
