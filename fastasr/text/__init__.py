"""Transcripts: normalisation (the one definition every reader shares), tokenizers, and WER / CER scoring."""

from fastasr.text.normalization import DEFAULT_TEXT, TextConfig, TextRejected, normalize

__all__ = ["DEFAULT_TEXT", "TextConfig", "TextRejected", "normalize"]
