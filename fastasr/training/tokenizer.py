"""The tokenizer a run trains with, made from `--tokenizer` and the run's shards: the alphabet's characters, a
SentencePiece model trained on the train split's transcripts, or a user's model file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastasr.data.loader import read_index, split_texts
from fastasr.shards.index import Reach
from fastasr.text.tokenizer import (MODEL_FILE, TRAIN_SENTENCES, AnyTokenizer, CharTokenizer, SentencePieceTokenizer,
                                    load_model_file, parse_spec, train_sentencepiece, write_atomic)

log = logging.getLogger("fastasr.tokenizer")


def make_tokenizer(spec: str, source, run_dir, *, seed: int, reach: Reach | None = None) -> AnyTokenizer:
    """The tokenizer `spec` (--tokenizer) asks for, for the shard directory `source` (`reach`: the opt-ins of an
    index read from a URL). A SentencePiece model (trained here or loaded) is also written to
    RUN_DIR/tokenizer.model."""
    kind, arg = parse_spec(spec)
    index = read_index(source, reach)
    alphabet = index["text"]["alphabet"]
    if kind == "char":
        return CharTokenizer(alphabet)
    if kind == "file":
        tok = load_model_file(arg, alphabet)
        log.info(f"{arg}: {tok.describe()}")
    else:
        total = index["splits"]["train"]["samples"]
        used = min(total, TRAIN_SENTENCES)
        log.info(f"training SentencePiece {kind}:{arg} on the first {used:,} of {total:,} train "
                 f"transcripts (index order; at most {TRAIN_SENTENCES:,} are read)")
        t0 = time.perf_counter()
        texts = split_texts(source, split="train", limit=TRAIN_SENTENCES, reach=reach)
        model = train_sentencepiece(texts, kind, arg, alphabet, seed=seed, option=f"--tokenizer {spec}")
        tok = SentencePieceTokenizer(model, kind)
        log.info(f"{tok.describe()} trained in {time.perf_counter() - t0:.1f} s")
    write_atomic(tok.model, Path(run_dir) / MODEL_FILE)
    return tok
