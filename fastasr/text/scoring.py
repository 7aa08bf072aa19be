"""Scoring: WER, CER and word accuracy through jiwer, after the same normalisation on both sides.

Accuracy is the standard word accuracy hits / reference words (= 1 - (S + D) / N): unlike 1 - WER it ignores
insertions, so it stays in [0, 1]. Training's validation and `fastasr eval` both score here.
"""

from __future__ import annotations

import re

import jiwer

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


def utterance_char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(character errors S + D + I, reference characters) of one utterance, as `score` counts them for its CER."""
    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    if not ref:
        return len(hyp), 0
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions
