"""Transcript normalisation (and, by its old name, the character tokenizer of fastasr.text.tokenizer).

Open STT transcripts are lowercase Cyrillic with spaces; numbers are spelled out and hyphenated words are joined.
`normalize` brings any transcript to that form or raises `TextRejected` naming why it cannot.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

RUSSIAN_LETTERS = "абвгдежзийклмнопрстуфхцчшщъыьэюя"
YO = "ё"
DIGITS = "0123456789"
LATIN = "abcdefghijklmnopqrstuvwxyz"
HYPHENS = "-\u2010\u2011"  # hyphen-minus, hyphen, non-breaking hyphen; dashes (–, —) are punctuation

_INNER_HYPHEN = re.compile(rf"(?<=\w)[{HYPHENS}]+(?=\w)")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TextConfig:
    """How transcripts are normalised; recorded in the shard index so every reader agrees."""

    fold_yo: bool = True
    keep_digits: bool = False
    keep_latin: bool = False

    @property
    def alphabet(self) -> str:
        """Token characters: space first, then letters (and digits / Latin when kept)."""
        chars = " " + RUSSIAN_LETTERS
        if not self.fold_yo:
            chars += YO
        if self.keep_digits:
            chars += DIGITS
        if self.keep_latin:
            chars += LATIN
        return chars

    def to_dict(self) -> dict:
        return {**asdict(self), "alphabet": self.alphabet}

    @classmethod
    def from_dict(cls, d: dict) -> "TextConfig":
        return cls(fold_yo=d["fold_yo"], keep_digits=d["keep_digits"], keep_latin=d["keep_latin"])


DEFAULT_TEXT = TextConfig()


class TextRejected(ValueError):
    """A transcript that cannot be normalised into the alphabet; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def normalize(raw: str, config: TextConfig = DEFAULT_TEXT) -> str:
    """Lowercase, fold ё→е, join hyphenated words, punctuation → space, collapse whitespace.

    Raises TextRejected with reason `empty_text`, `digits`, `latin` or `out_of_alphabet`.
    """
    text = unicodedata.normalize("NFC", raw).lower()
    if config.fold_yo:
        text = text.replace(YO, "е")
    text = _INNER_HYPHEN.sub("", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "P" or cat[0] == "Z" or ch.isspace():
            out.append(" ")
        elif cat == "Mn":  # stress marks and other combining accents are not spoken
            continue
        else:
            out.append(ch)
    text = _SPACES.sub(" ", "".join(out)).strip()
    if not text:
        raise TextRejected("empty_text")
    allowed = set(config.alphabet)
    bad = sorted({ch for ch in text if ch not in allowed})
    if bad:
        # the detail names the words as written ("2024", not the sorted characters "024"), the first three
        words = [w for w in text.split() if any(ch not in allowed for ch in w)]
        detail = " ".join(words[:3]) + (" …" if len(words) > 3 else "")
        if any(ch in DIGITS for ch in bad):
            raise TextRejected("digits", detail)
        if any(ch in LATIN for ch in bad):
            raise TextRejected("latin", detail)
        raise TextRejected("out_of_alphabet", detail)
    return text
