"""Word times from token times: which emitted tokens spell which word of the decoded text.

Works for any of fastasr's tokenizers without knowing how it marks word boundaries (a space character, a "▁"
piece prefix, silent pieces): token k belongs to the word the text has reached once the first k + 1 tokens are
decoded, if it added a visible character; a token that adds only a space or nothing (a blank, <unk>) belongs to
no word. A word's start is its first token's time, its end its last token's time plus one encoder frame.
"""

from __future__ import annotations

__all__ = ["word_times"]


def word_times(tokenizer, tokens: list[int], times: list[float],
               frame_seconds: float) -> list[tuple[str, float, float]]:
    """(word, start, end) per word of tokenizer.decode(tokens), from each token's emission time (seconds)."""
    assert len(tokens) == len(times), f"{len(tokens)} tokens, {len(times)} times"
    spans: list[list[float]] = []  # per word: [first time, last time]
    before = ""
    for k, t in enumerate(times):
        text = tokenizer.decode(tokens[:k + 1])
        if text != before and text and not text[-1].isspace():
            words = len(text.split())
            if words > len(spans):
                spans.append([t, t])
            else:
                spans[-1][1] = t
        before = text
    words = tokenizer.decode(tokens).split()
    assert len(words) == len(spans), f"{len(words)} words, {len(spans)} spans"
    return [(w, round(a, 3), round(b + frame_seconds, 3)) for w, (a, b) in zip(words, spans)]
