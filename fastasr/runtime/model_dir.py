"""The export directory (`fastasr-onnx/2`): what `fastasr export` writes and `fastasr.runtime` reads.

The three graphs follow the calling convention of sherpa-onnx's NeMo transducers (`model_type="nemo_transducer"`:
sherpa-onnx/csrc/offline-transducer-nemo-model.cc and the greedy and modified-beam-search decoders beside it), so the
same files load in fastasr.runtime and, for a model whose front end sherpa-onnx computes, in sherpa-onnx:

    DIR/encoder.onnx     features (N, n_mels, T) f32, feature_lengths (N,) i64
                         → encoder_out (N, J, T') f32 (already through the joiner's encoder projection),
                           encoder_out_lengths (N,) i64
    DIR/predictor.onnx   targets (N, 1) i32, target_length (N,) i32 (passed through), h (L, N, H) f32,
                         c (L, N, H) f32: one label step of the LSTM
                         → predictor_out (N, J, 1) f32 (through the joiner's predictor projection),
                           predictor_out_length (N,) i32, h_out, c_out
    DIR/joiner.onnx      encoder_out (N, J, 1), predictor_out (N, J, 1) → logits (N, V), V static
    DIR/*.int8.onnx      the same graphs dynamically quantised (`--quantize int8`), beside the float ones; their
                         activation ranges are taken per call over the whole batch, so an int8 text can depend on
                         the other utterances in its batch (a float one does not)
    DIR/tokenizer.json   {"format", "type": "char", "blank_id": 0, "tokens": ["<blank>", " ", "а", …]}: tokenizer
                         id → token; or {"format", "type": "sentencepiece", "model_type": "bpe"|"unigram",
                         "blank_id": 0, "tokens": ["<blank>", "<unk>", "▁при", …], "silent_ids": [0, 1],
                         "space": "▁", "model": "tokenizer.model"}: text is the pieces joined, "▁" a space,
                         stripped, the silent ids (blank, <unk>, control pieces) left out (join_pieces)
    DIR/tokenizer.model  the SentencePiece model itself (sentencepiece tokenizers), for other runtimes
    DIR/tokens.txt       sherpa-onnx's symbol table, `symbol id` per graph id, "▁" for a space, `<blk>` last; only
                         with a front end sherpa-onnx computes (features.type "kaldi_fbank"), whose encoder.onnx
                         (float and int8) then carries sherpa's metadata (vocab_size without the blank, feat_dim, …)
    DIR/streaming_encoder.onnx  a streaming model's encoder as one chunk step with its caches (below), in the
                         convention of sherpa-onnx's online NeMo transducers; model.json's `streaming` says the chunk,
                         the left context and the caches' shapes (null for a model that does not stream)
    DIR/model.json       everything a front end and a decoder need: audio (rate, downmix, peak normalisation,
                         pre-emphasis), features (every setting of the log-mel or kaldi fbank front end), encoder
                         subsampling, predictor state shape, blank id and the graph id → tokenizer id map, max
                         symbols per frame, the graphs' files and I/O, provenance (the checkpoint, its step and
                         weight digest, tool versions) and `check`: per precision and graph, the largest
                         |onnxruntime - torch| on random inputs at export time

Graph ids are not tokenizer ids. fastasr's tokenizers keep the blank at id 0; a NeMo transducer has it last, so
the graphs take and give graph id s for tokenizer id (s + 1) % V (decoding.tokenizer_id_offset = 1): the predictor
maps its targets before the embedding and the joiner rotates its logits, and the blank is graph id V - 1.

Both sides use this module, so the names are defined once. Reading validates everything the runtime relies on
and raises UserError naming the file and what was expected: a missing or corrupt directory is one clear line, and
an export of the older format (`fastasr-onnx/1`: other graph shapes) is told to re-export.
An export directory is data: every number the runtime sizes an array or a loop by lies within fields.LIMITS (a model.json
asking for n_fft=10**9 or 10**12 symbols per frame is refused, not obeyed), and every file it names is a plain file
name inside the directory (no `../x.onnx`, no absolute path, no link out). EXPORT_FILES are the only names an export
holds: `fastasr export` replaces a directory only when it holds those alone (`is_export`, either format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastasr.audio.files import SAMPLE_RATE
from fastasr.audio.mel import MelSettings
from fastasr.errors import UserError
from fastasr.runtime.fields import field, inside, number, read_json
from fastasr.runtime.stream_spec import STREAMING_GRAPH, StreamingSpec, read_streaming, streaming_io
from fastasr.text.tokenizer import BLANK, MODEL_FILE, SPACE_PIECE, CharTokenizer, PieceDecoder

if TYPE_CHECKING:
    from fastasr.audio.fbank import FbankSettings

FORMAT = "fastasr-onnx/2"
OLD_FORMATS = ("fastasr-onnx/1",)  # exports `fastasr export` still replaces, which this runtime no longer reads
TOKENIZER_FORMAT = "fastasr-tokenizer/1"
MODEL_JSON = "model.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENS_TXT = "tokens.txt"
BLANK_TOKEN = "<blank>"
GRAPHS = ("encoder", "predictor", "joiner")
PRECISIONS = ("float", "int8")
TOKENIZER_ID_OFFSET = 1  # graph id s is tokenizer id (s + 1) % V: the blank (tokenizer id 0) is graph id V - 1
# graph → (inputs, outputs), each name → its axes; named axes in DYNAMIC_AXES are dynamic, the others static
# (an int is that size). sherpa-onnx feeds the inputs by position and reads the names from the graph.
IO = {
    "encoder": ({"features": ["N", "n_mels", "T"], "feature_lengths": ["N"]},
                {"encoder_out": ["N", "J", "T_out"], "encoder_out_lengths": ["N"]}),
    "predictor": ({"targets": ["N", 1], "target_length": ["N"], "h": ["L", "N", "H"], "c": ["L", "N", "H"]},
                  {"predictor_out": ["N", "J", 1], "predictor_out_length": ["N"], "h_out": ["L", "N", "H"],
                   "c_out": ["L", "N", "H"]}),
    "joiner": ({"encoder_out": ["N", "J", 1], "predictor_out": ["N", "J", 1]}, {"logits": ["N", "V"]}),
}
DYNAMIC_AXES = ("N", "T", "T_out")
# How the log-mel features are computed beyond MelSettings' numbers: fastasr.audio.mel.log_mel computes exactly
# this. The kaldi front end's recipe is fastasr.audio.fbank.FBANK_METHOD (features.type "kaldi_fbank").
LOG_MEL_METHOD = {"type": "log_mel", "window": "hann_periodic_centred", "center": True, "pad_mode": "constant",
                  "power": 2.0, "mel_scale": "slaney", "mel_norm": "slaney", "log": "natural",
                  "normalization": "per_utterance_mean_var"}  # applied when features.normalize is true
FEATURE_TYPES = ("log_mel", "kaldi_fbank")
# How the waveform is conditioned before the features (fastasr.audio.files.WAVEFORMS) ↔ model.json's audio.
WAVEFORM_AUDIO = {"peak_preemphasis": True, "raw": False}  # → audio.peak_normalize


def graph_file(graph: str, precision: str = "float") -> str:
    return f"{graph}.onnx" if precision == "float" else f"{graph}.{precision}.onnx"


EXPORT_FILES = frozenset({MODEL_JSON, TOKENIZER_JSON, MODEL_FILE, TOKENS_TXT,
                          *(graph_file(g, p) for g in (*GRAPHS, STREAMING_GRAPH) for p in PRECISIONS)})


def is_export(path: Path) -> bool:
    """Whether the directory `path` holds a fastasr export and nothing else: its model.json of FORMAT (or an
    OLD_FORMATS one), and only EXPORT_FILES, as plain files. What `fastasr export` may replace (or an empty one)."""
    try:
        entries = list(path.iterdir())
        meta = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("format") in (FORMAT, *OLD_FORMATS)
            and all(e.name in EXPORT_FILES and e.is_file() and not e.is_symlink() for e in entries))


def tokenizer_json(tokenizer) -> dict:
    """tokenizer.json for a fastasr.text.tokenizer tokenizer (char or sentencepiece)."""
    out = {"format": TOKENIZER_FORMAT, "type": tokenizer.kind, "blank_id": BLANK, "tokens": tokenizer.pieces()}
    if tokenizer.kind == "sentencepiece":
        out.update(model_type=tokenizer.model_type, silent_ids=sorted(tokenizer.silent_ids), space=SPACE_PIECE,
                   model=MODEL_FILE)
    return out


def log_mel_features(mel: MelSettings) -> dict:
    """model.json's `features` for the log-mel front end."""
    return {**LOG_MEL_METHOD, **mel.to_dict(), "frames": "1 + samples // hop_length"}


def model_json(*, features: dict, waveform: str, preemphasis: float, subsampling: int, encoder_dim: int,
               pred_layers: int, pred_hidden: int, vocab_size: int, max_symbols: int, precisions: list[str],
               opset: int, sherpa: bool, source: dict, check: dict, streaming: dict | None = None) -> dict:
    """features: log_mel_features(…) or the kaldi front end's settings (FbankSettings.to_dict); waveform: a key
    of WAVEFORM_AUDIO (preemphasis is its coefficient for "peak_preemphasis"); streaming: a streaming model's
    {"chunk_frames", "left_chunks", "caches": {name: axes}} (the graphs' files and I/O are added here)."""
    from fastasr import __version__

    blank = (BLANK - TOKENIZER_ID_OFFSET) % vocab_size
    return {
        "format": FORMAT,
        "fastasr_version": __version__,
        "audio": {"sample_rate": features["sample_rate"], "downmix": "channel_mean", "resampler": "soxr",
                  "peak_normalize": WAVEFORM_AUDIO[waveform],
                  "preemphasis": preemphasis if WAVEFORM_AUDIO[waveform] else 0.0},
        "features": features,
        "encoder": {"subsampling": subsampling, "frames_out": "ceil(frames / 2) per stride-2 layer",
                    "dim": encoder_dim},
        "predictor": {"layers": pred_layers, "hidden": pred_hidden, "start_token": blank},
        "decoding": {"blank_id": blank, "vocab_size": vocab_size, "tokenizer_id_offset": TOKENIZER_ID_OFFSET,
                     "tokenizer_id": "(graph id + tokenizer_id_offset) % vocab_size",
                     "max_symbols_per_frame": max_symbols},
        "tokenizer": TOKENIZER_JSON,
        "graphs": {p: {g: graph_file(g, p) for g in GRAPHS} for p in precisions},
        "io": {g: {"inputs": ins, "outputs": outs} for g, (ins, outs) in IO.items()},
        "dynamic_axes": list(DYNAMIC_AXES),
        "opset": opset,
        # How sherpa-onnx loads this directory (its decoder is our predictor), or null: its features are not ones
        # sherpa-onnx computes.
        # A streaming model's: sherpa-onnx's OnlineRecognizer with the streaming encoder (its fbank is the online
        # one, which the whole-utterance encoder.onnx was not trained on, so that one is for fastasr.runtime).
        "sherpa_onnx": ({"model_type": "nemo_transducer", "tokens": TOKENS_TXT, "decoder": "predictor",
                         "recognizer": "online" if streaming else "offline",
                         "encoder": graph_file(STREAMING_GRAPH if streaming else "encoder")}
                        if sherpa else None),
        "streaming": None if streaming is None else {
            **streaming, "feature_frames": streaming["chunk_frames"] * subsampling,
            "graphs": {p: graph_file(STREAMING_GRAPH, p) for p in precisions},
            "io": dict(zip(("inputs", "outputs"), streaming_io(streaming["caches"])))},
        "source": source,
        "check": check,
    }


@dataclass(frozen=True)
class ModelDir:
    """A validated export directory."""

    path: Path
    meta: dict  # model.json as read
    feature_type: str  # FEATURE_TYPES
    features: MelSettings | FbankSettings  # log_mel's or kaldi_fbank's settings
    waveform: str  # fastasr.audio.files.WAVEFORMS
    preemphasis: float  # the coefficient of waveform "peak_preemphasis"
    blank: int  # graph id
    tokenizer_id_offset: int  # tokenizer id = (graph id + offset) % vocab_size
    vocab_size: int
    max_symbols: int
    encoder_dim: int
    pred_layers: int
    pred_hidden: int
    tokenizer: CharTokenizer | PieceDecoder
    streaming: StreamingSpec | None = None  # a streaming model's chunk step, else None

    def graph(self, graph: str, precision: str = "float") -> Path:
        if precision not in self.meta["graphs"]:
            hint = " (export with --quantize int8)" if precision == "int8" else ""
            raise UserError(f"{self.path}: has no {precision} graphs{hint}; it holds {sorted(self.meta['graphs'])}")
        if graph == STREAMING_GRAPH:
            if self.streaming is None:
                raise UserError(f"{self.path}: an export of a model that does not stream (it reads the whole "
                                "utterance); train one with model.streaming=true and export it")
            name = self.meta["streaming"]["graphs"][precision]
        else:
            name = self.meta["graphs"][precision][graph]
        path = self.path / name  # a plain name inside the directory (_inside)
        if not path.is_file():
            raise UserError(f"{path}: missing from the export directory (model.json lists it)")
        return path


def _read_tokenizer(path: Path, vocab_size: int) -> CharTokenizer | PieceDecoder:
    data = read_json(path, "tokenizer")
    if data.get("format") != TOKENIZER_FORMAT:
        raise UserError(f"{path}: format {data.get('format')!r}, expected {TOKENIZER_FORMAT!r}")
    if data.get("type") not in ("char", "sentencepiece"):
        raise UserError(f"{path}: tokenizer type {data.get('type')!r} is not supported by this runtime "
                        "(supported: 'char', 'sentencepiece')")
    tokens = field(data, "tokens", list, path)
    if len(tokens) != vocab_size or tokens[:1] != [BLANK_TOKEN] or data.get("blank_id") != BLANK:
        raise UserError(f"{path}: expected {vocab_size} tokens with {BLANK_TOKEN!r} first (id {BLANK})")
    if data["type"] == "sentencepiece":
        silent = field(data, "silent_ids", list, path)
        if not all(isinstance(t, str) and t for t in tokens) or data.get("space") != SPACE_PIECE:
            raise UserError(f"{path}: a 'sentencepiece' tokenizer's tokens must be non-empty strings, with "
                            f"space {SPACE_PIECE!r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in silent):
            raise UserError(f"{path}: silent_ids must be token ids below {vocab_size}")
        return PieceDecoder(tokens, silent)
    if not all(isinstance(t, str) and len(t) == 1 for t in tokens[1:]):
        raise UserError(f"{path}: a 'char' tokenizer's tokens after the blank must be single characters")
    try:
        return CharTokenizer("".join(tokens[1:]))
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def read_model_dir(path: str | Path) -> ModelDir:
    """The export directory at `path`, validated; UserError naming the file when something is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such export directory (expected the --out DIR of `fastasr export`)")
    meta_path = path / MODEL_JSON
    meta = read_json(meta_path, "model description")
    if meta.get("format") in OLD_FORMATS:
        raise UserError(f"{meta_path}: an export of an older fastasr (format {meta['format']!r}, other graph "
                        f"inputs and outputs; this one reads {FORMAT!r}): re-export with this fastasr "
                        f"(`fastasr export CKPT --out {path}`)")
    if meta.get("format") != FORMAT:
        raise UserError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if field(meta, "audio.sample_rate", object, meta_path) != SAMPLE_RATE:
        raise UserError(f"{meta_path}: audio.sample_rate is {meta['audio']['sample_rate']!r}; this runtime "
                        f"computes {SAMPLE_RATE!r}")
    feature_type, features = _read_features(meta, meta_path)
    waveform, preemphasis = _read_waveform(meta, meta_path)
    graphs = field(meta, "graphs", dict, meta_path)
    for precision, files in graphs.items():
        if precision not in PRECISIONS or not isinstance(files, dict) or set(files) != set(GRAPHS):
            raise UserError(f"{meta_path}: graphs.{precision} must name the files of {list(GRAPHS)}")
        for graph, name in files.items():
            inside(path, name, f"graphs.{precision}.{graph}", meta_path)
    vocab_size = number(meta, "decoding.vocab_size", meta_path)
    blank = field(meta, "decoding.blank_id", int, meta_path)
    offset = field(meta, "decoding.tokenizer_id_offset", int, meta_path)
    if not (0 <= blank < vocab_size and 0 <= offset < vocab_size and (blank + offset) % vocab_size == BLANK):
        raise UserError(f"{meta_path}: decoding.blank_id {blank} and tokenizer_id_offset {offset} do not map the "
                        f"blank to tokenizer id {BLANK} ((id + offset) % {vocab_size})")
    tokenizer = _read_tokenizer(inside(path, field(meta, "tokenizer", str, meta_path), "tokenizer", meta_path),
                                vocab_size)
    streaming = read_streaming(meta, meta_path, path, feature_type, features)
    return ModelDir(path=path, meta=meta, feature_type=feature_type, features=features, waveform=waveform,
                    preemphasis=float(preemphasis), blank=blank, tokenizer_id_offset=offset, vocab_size=vocab_size,
                    max_symbols=number(meta, "decoding.max_symbols_per_frame", meta_path),
                    encoder_dim=number(meta, "encoder.dim", meta_path),
                    pred_layers=number(meta, "predictor.layers", meta_path),
                    pred_hidden=number(meta, "predictor.hidden", meta_path), tokenizer=tokenizer,
                    streaming=streaming)


def _read_waveform(meta: dict, meta_path: Path) -> tuple[str, float]:
    """(waveform, pre-emphasis coefficient): a peak-normalised waveform with a coefficient in [0, 1), or the raw
    one (peak_normalize false, preemphasis 0)."""
    peak = field(meta, "audio.peak_normalize", bool, meta_path)
    preemphasis = number(meta, "audio.preemphasis", meta_path)
    if peak and not 0 <= preemphasis < 1:
        raise UserError(f"{meta_path}: audio.preemphasis is {preemphasis!r}, expected 0 <= coefficient < 1")
    if not peak and preemphasis != 0:
        raise UserError(f"{meta_path}: audio.preemphasis is {preemphasis!r}; this runtime pre-emphasises only a "
                        "peak-normalised waveform (audio.peak_normalize true)")
    return ("peak_preemphasis" if peak else "raw"), preemphasis


def _read_features(meta: dict, meta_path: Path) -> tuple[str, MelSettings | FbankSettings]:
    """features.type and its settings: the recipe this runtime computes, each number of its type, the sizes within
    LIMITS, the band within the Nyquist range."""
    kind = field(meta, "features.type", str, meta_path)
    if kind == "log_mel":
        method, settings_type = LOG_MEL_METHOD, MelSettings
    elif kind == "kaldi_fbank":
        from fastasr.audio.fbank import FBANK_METHOD, FbankSettings  # NumPy only; imported for the models using it

        method, settings_type = FBANK_METHOD, FbankSettings
    else:
        raise UserError(f"{meta_path}: features.type is {kind!r}; this runtime computes {list(FEATURE_TYPES)}")
    for key, want in method.items():
        if field(meta, f"features.{key}", object, meta_path) != want:
            raise UserError(f"{meta_path}: features.{key} is {meta['features'][key]!r}; this runtime computes "
                            f"{want!r}")
    settings = {}
    for name, f in settings_type.__dataclass_fields__.items():
        key = f"features.{name}"
        if isinstance(f.default, (bool, str)):
            settings[name] = field(meta, key, type(f.default), meta_path)
        else:
            settings[name] = number(meta, key, meta_path)
            if isinstance(f.default, int) and not isinstance(settings[name], int):
                raise UserError(f"{meta_path}: field {key!r} is {settings[name]!r}, expected int")
    s = settings
    if s["sample_rate"] != SAMPLE_RATE:
        raise UserError(f"{meta_path}: features.sample_rate is {s['sample_rate']}; the audio is {SAMPLE_RATE} Hz")
    if kind == "log_mel" and not (0 <= s["f_min"] < s["f_max"] <= s["sample_rate"] / 2 and s["log_floor"] > 0
                                  and s["norm_eps"] > 0):
        raise UserError(f"{meta_path}: features need 0 <= f_min < f_max <= sample_rate / 2 and a positive log_floor "
                        f"and norm_eps; got f_min={s['f_min']}, f_max={s['f_max']}, log_floor={s['log_floor']}, "
                        f"norm_eps={s['norm_eps']}")
    try:
        return kind, settings_type(**settings)
    except ValueError as exc:
        raise UserError(f"{meta_path}: bad {kind} settings ({exc})") from None
