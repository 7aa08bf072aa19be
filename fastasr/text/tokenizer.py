"""Tokenizers: normalised transcript ↔ token ids, with id 0 the RNN-T blank.

Two kinds behind one interface (`blank`, `vocab_size`, `encode`, `decode`, `pieces`, `to_dict` / `from_dict`,
`describe`): the characters of the shard index's alphabet (ids 1..N), or a SentencePiece model, BPE or unigram,
trained on the train split's transcripts (`--tokenizer bpe:N|unigram:N`) or brought by the user (`FILE.model`).
SentencePiece ids are shifted by one so 0 stays the blank; its <unk> (and any control piece) is never produced
for text in the alphabet and decodes to nothing.

Decoding joins pieces and turns "▁" into spaces in plain Python (`join_pieces`), so `fastasr.runtime` decodes an
export's tokenizer.json without sentencepiece and gets the checkpoint's text exactly. Nothing here imports torch,
and sentencepiece only where a model is trained or loaded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fastasr.errors import UserError

log = logging.getLogger("fastasr.tokenizer")

BLANK = 0
BLANK_PIECE = "<blank>"
SPACE_PIECE = "\u2581"  # "▁": SentencePiece's word-boundary mark
MODEL_FILE = "tokenizer.model"  # RUN_DIR/tokenizer.model and EXPORT_DIR/tokenizer.model
MODEL_TYPES = ("bpe", "unigram")
# Transcripts a SentencePiece model is trained on: the first ones of the train split in index order. Enough for a
# stable vocabulary of a few thousand pieces, and a 16 M-utterance corpus is not read through for it.
TRAIN_SENTENCES = 1_000_000
# A fixed thread count, not the machine's: the count is recorded in the model proto (and unigram's EM sums in
# per-thread order), so the same transcripts give the same model bytes on any machine.
TRAIN_THREADS = 4
ACCEPTED = "char, bpe:N, unigram:N (N SentencePiece pieces, e.g. bpe:256) or a SentencePiece FILE.model"


def join_pieces(pieces: Iterable[str]) -> str:
    """Pieces → text: concatenated, "▁" as a space, whitespace collapsed and stripped (a normalised transcript)."""
    return " ".join("".join(pieces).replace(SPACE_PIECE, " ").split())


class CharTokenizer:
    """Characters of the alphabet → ids 1..N; id 0 is the RNN-T blank."""

    kind = "char"
    blank = BLANK

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet has repeated characters: {alphabet!r}")
        self.alphabet = alphabet
        self._ids = {ch: i + 1 for i, ch in enumerate(alphabet)}

    @classmethod
    def from_index(cls, index: dict) -> "CharTokenizer":
        """The tokenizer of a shard directory's index.json (its `text.alphabet`)."""
        return cls(index["text"]["alphabet"])

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the alphabet {self.alphabet!r}") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.alphabet[i - 1] for i in ids if 0 < i <= len(self.alphabet))

    def pieces(self) -> list[str]:
        return [BLANK_PIECE, *self.alphabet]

    def to_dict(self) -> dict:
        return {"type": "char", "alphabet": self.alphabet}

    def describe(self) -> str:
        return f"char ({self.vocab_size} tokens with the blank)"

    def identity(self) -> tuple:
        """Equal for two tokenizers exactly when they map every text to the same ids."""
        return ("char", self.alphabet)


class SentencePieceTokenizer:
    """A SentencePiece model's pieces → ids 1..P (its own id + 1); id 0 is the RNN-T blank.

    Holds the model proto bytes and pickles as them, so it travels into DataLoader worker processes."""

    kind = "sentencepiece"
    blank = BLANK

    def __init__(self, model: bytes, model_type: str):
        self.model = bytes(model)
        self.model_type = model_type
        self._load()

    def _load(self) -> None:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(self.model)
        n = sp.get_piece_size()
        self._sp = sp
        self._unk = sp.unk_id()
        self._pieces = [BLANK_PIECE, *(sp.id_to_piece(i) for i in range(n))]
        # Pieces that are no text (<unk>, control pieces such as <s>, unused ones) decode to nothing.
        self.silent_ids = frozenset({BLANK} | {i + 1 for i in range(n)
                                               if sp.is_unknown(i) or sp.is_control(i) or sp.is_unused(i)})

    def __getstate__(self) -> dict:
        return {"model": self.model, "model_type": self.model_type}

    def __setstate__(self, state: dict) -> None:
        self.model, self.model_type = state["model"], state["model_type"]
        self._load()

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, text: str) -> list[int]:
        ids = self._sp.encode(text)
        if self._unk in ids:
            unknown = sorted({ch for ch in text if self._unk in self._sp.encode(ch)})
            raise ValueError(f"{''.join(unknown)!r} not covered by the SentencePiece model (<unk>)")
        return [i + 1 for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        return join_pieces(self._pieces[i] for i in ids if 0 < i < len(self._pieces) and i not in self.silent_ids)

    def pieces(self) -> list[str]:
        return list(self._pieces)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()

    def to_dict(self) -> dict:
        return {"type": "sentencepiece", "model_type": self.model_type, "vocab_size": self.vocab_size - 1,
                "model": self.model}

    def describe(self) -> str:
        return (f"{self.model_type}:{self.vocab_size - 1} SentencePiece ({self.vocab_size} tokens with the blank, "
                f"model sha256 {self.sha256[:12]})")

    def identity(self) -> tuple:
        return ("sentencepiece", self.sha256)


class PieceDecoder:
    """Decode-only: ids → text from an export's pieces (tokenizer.json), as SentencePieceTokenizer.decode does."""

    blank = BLANK

    def __init__(self, pieces: list[str], silent_ids: Iterable[int]):
        self._pieces = list(pieces)
        self.silent_ids = frozenset(silent_ids) | {BLANK}

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def decode(self, ids: Iterable[int]) -> str:
        return join_pieces(self._pieces[i] for i in ids if 0 < i < len(self._pieces) and i not in self.silent_ids)


AnyTokenizer = CharTokenizer | SentencePieceTokenizer


def from_dict(d: dict) -> AnyTokenizer:
    if d["type"] == "char":
        return CharTokenizer(d["alphabet"])
    if d["type"] == "sentencepiece":
        return SentencePieceTokenizer(d["model"], d["model_type"])
    raise ValueError(f"unknown tokenizer type {d['type']!r}")


def tokenizer_of(ckpt: dict, path=None) -> AnyTokenizer:
    """A checkpoint's tokenizer: its `tokenizer` dict, or for checkpoints older than that its `alphabet` (chars)."""
    if "tokenizer" in ckpt:
        return from_dict(ckpt["tokenizer"])
    if isinstance(ckpt.get("alphabet"), str):
        return CharTokenizer(ckpt["alphabet"])
    raise UserError(f"{path or 'checkpoint'}: holds no tokenizer (neither 'tokenizer' nor 'alphabet'); is it a "
                    "checkpoint written by `fastasr train`?")


# --- the --tokenizer option -----------------------------------------------------------------------------------------

_SIZED = re.compile(r"(bpe|unigram):(.*)")


def parse_spec(spec: str) -> tuple[str, int | Path | None]:
    """("char", None) | ("bpe" | "unigram", N) | ("file", path); a UserError naming --tokenizer otherwise."""
    if spec == "char":
        return "char", None
    if m := _SIZED.fullmatch(spec):
        n = m.group(2)
        if not n.isdigit() or int(n) < 2:
            raise UserError(f"--tokenizer {spec}: N must be a whole number of pieces ≥ 2; accepted: {ACCEPTED}")
        return m.group(1), int(n)
    if spec.endswith(".model"):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--tokenizer {spec}: no such file (a SentencePiece model); accepted: {ACCEPTED}")
        return "file", path
    raise UserError(f"--tokenizer {spec!r}: not understood; accepted: {ACCEPTED}")


def matches(spec: str, tokenizer: AnyTokenizer) -> bool:
    """Whether `spec` asks for `tokenizer` (what --resume checks against the run's)."""
    kind, arg = parse_spec(spec)
    if kind == "char":
        return tokenizer.kind == "char"
    if kind == "file":
        return tokenizer.kind == "sentencepiece" and Path(arg).read_bytes() == tokenizer.model
    return tokenizer.kind == "sentencepiece" and (tokenizer.model_type, tokenizer.vocab_size - 1) == (kind, arg)


def check_resume(spec: str | None, saved: AnyTokenizer, path) -> None:
    """A UserError when --tokenizer contradicts the tokenizer of the run being resumed (None: not given)."""
    if spec is not None and not matches(spec, saved):
        raise UserError(f"--resume: {path} was trained with the tokenizer {saved.describe()}, not --tokenizer {spec}; "
                        "drop --tokenizer to continue the run, or start a new run with --init-from to fine-tune "
                        "with another tokenizer")


def train_sentencepiece(texts: Iterable[str], model_type: str, pieces: int, alphabet: str, *, seed: int,
                        option: str = "--tokenizer") -> bytes:
    """A SentencePiece model proto trained deterministically on `texts` (normalised transcripts): every character
    of `alphabet` is a piece (so no in-alphabet text meets <unk>), no byte fallback, no BOS / EOS, text taken as
    it is (identity normalisation: it is normalised already)."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, model_type=model_type, vocab_size=pieces,
            character_coverage=1.0, required_chars=alphabet.replace(" ", ""), byte_fallback=False,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, normalization_rule_name="identity",
            input_sentence_size=TRAIN_SENTENCES, shuffle_input_sentence=False, num_threads=TRAIN_THREADS,
            minloglevel=2)
    except RuntimeError as exc:
        raise UserError(f"{option}: {_training_error(str(exc), pieces)}; accepted: {ACCEPTED}") from None
    return out.getvalue()


def _training_error(message: str, pieces: int) -> str:
    if m := re.search(r"Please set it to a value <= (\d+)", message):
        return f"{pieces} pieces are more than these transcripts make (at most {m.group(1)}); choose a smaller N"
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        return f"{pieces} pieces cannot hold the alphabet and <unk> (at least {m.group(1)}); choose a larger N"
    return f"SentencePiece could not train ({' '.join(message.split())})"


def load_model_file(path: Path, alphabet: str) -> SentencePieceTokenizer:
    """A user's SentencePiece model, refused (UserError) unless it is BPE or unigram and writes every character
    of the alphabet back as itself."""
    from sentencepiece import sentencepiece_model_pb2

    option = f"--tokenizer {path}"
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
        if not proto.pieces:
            raise ValueError("no pieces")
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"{option}: not a SentencePiece model ({exc})") from None
    model_type = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower()
    if model_type not in MODEL_TYPES:
        raise UserError(f"{option}: a {model_type} SentencePiece model; fastasr takes {' or '.join(MODEL_TYPES)}")
    tok = SentencePieceTokenizer(path.read_bytes(), model_type)
    letters = [ch for ch in alphabet if ch != " "]
    sample = " ".join(letters)
    bad = [ch for ch in letters if tok._unk in tok._sp.encode(ch)]
    if bad:
        raise UserError(f"{option}: does not cover the alphabet: {''.join(bad)!r} would be <unk>; train it with "
                        "character_coverage=1.0 on transcripts normalised as the shards are")
    if tok.decode(tok.encode(sample)) != sample:
        raise UserError(f"{option}: does not write the alphabet back as itself ({sample!r} decodes as "
                        f"{tok.decode(tok.encode(sample))!r}); byte fallback or a normalisation rule changes it")
    return tok


def write_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would follow the file through the rename; it is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def spec_of(tokenizer: AnyTokenizer) -> str:
    """The --tokenizer that names `tokenizer`'s kind and size (a FILE.model's too)."""
    return "char" if tokenizer.kind == "char" else f"{tokenizer.model_type}:{tokenizer.vocab_size - 1}"


def record(tokenizer: AnyTokenizer, spec: str | None = None) -> dict:
    """What RUN_DIR/config.json says of the run's tokenizer (the checkpoints carry the tokenizer itself):
    `vocab_size` counts the blank (the model's output size), `pieces` the SentencePiece model's own."""
    out = {"spec": spec or spec_of(tokenizer), "type": tokenizer.kind, "vocab_size": tokenizer.vocab_size}
    if tokenizer.kind == "sentencepiece":
        out.update(model_type=tokenizer.model_type, pieces=tokenizer.vocab_size - 1, model=MODEL_FILE,
                   sha256=tokenizer.sha256)
    return out
