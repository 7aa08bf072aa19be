"""What sherpa-onnx needs beside an export's graphs to run it as a NeMo transducer: tokens.txt and encoder metadata.

sherpa-onnx's offline recogniser loads an export directory as it is,

    sherpa_onnx.OfflineRecognizer.from_transducer(encoder=DIR/encoder.onnx, decoder=DIR/predictor.onnx,
        joiner=DIR/joiner.onnx, tokens=DIR/tokens.txt, model_type="nemo_transducer", ...)

when the model's features are ones sherpa-onnx computes itself: the "kaldi" front end (model.frontend=kaldi,
fastasr.model.fbank.KaldiFbank) with sherpa's own settings for its feat_dim. fastasr's log-mel ("logmel") is not
among them, so such an export runs in fastasr.runtime only. What sherpa-onnx 2.0.1 reads (its
sherpa-onnx/csrc/offline-transducer-nemo-model.cc, offline-recognizer-transducer-nemo-impl.h):

- the encoder's metadata: vocab_size without the blank (sherpa adds 1), subsampling_factor (timestamps only),
  pred_rnn_layers and pred_hidden (the zero LSTM state it starts from), normalize_type ("per_feature" or "NA": its
  per-feature normalisation and log guard), feat_dim, is_giga_am 0 (GigaAM's other front end otherwise); a `url`
  containing "tdt" would make it a TDT model, so none is written;
- tokens.txt: `symbol id` per graph id, `<blk>` the last id, as many lines as the joiner has logits; a leading "▁"
  is shown as a space and the text's first space dropped. A "<unk>" line is what modified_beam_search skips.

The graphs' calling convention (shapes, int32 targets, the blank last) is fastasr.runtime.model_dir's.
"""

from __future__ import annotations

from pathlib import Path

from fastasr.errors import UserError
from fastasr.runtime.model_dir import TOKENIZER_ID_OFFSET
from fastasr.text.tokenizer import SPACE_PIECE

MODEL_TYPE = "nemo_transducer"
BLANK_SYMBOL = "<blk>"
HINT = "train with model.frontend=kaldi to run it in sherpa-onnx"
# sherpa-onnx's NeMo path: offline-recognizer-transducer-nemo-impl.h's PostInit keeps `normalize_type` as it is
# ("" and "NA" mean none) and computes the fbank of FbankSettings.sherpa_nemo for it.
NORMALIZE_TYPES = {True: "per_feature", False: "NA"}


def unsupported(config, features: dict) -> str | None:
    """Why sherpa-onnx cannot compute the features of a model of `config` (model.json `features`), or None."""
    frontend = getattr(config, "frontend", "logmel")
    if frontend != "kaldi":
        return f"sherpa-onnx cannot compute this model's features (model.frontend={frontend}, fastasr's own log-mel)"
    from fastasr.audio.fbank import FbankSettings

    s = FbankSettings.from_dict(features)
    if getattr(config, "streaming", False):  # run by the OnlineRecognizer, which computes other settings
        want, where = FbankSettings.sherpa_nemo_online(s.n_mels, s.sample_rate), "'s online recogniser"
    else:
        want, where = FbankSettings.sherpa_nemo(s.n_mels, s.normalize, s.sample_rate), ""
    if s != want or s.sample_rate != 16000:
        return f"sherpa-onnx{where} computes other features than this model's kaldi fbank settings ({s})"
    return None


def tokens_txt(pieces: list[str]) -> str:
    """sherpa-onnx's tokens.txt for a tokenizer's pieces (fastasr's order: the blank first): line s is graph id s,
    tokenizer piece (s + offset) % V, so the blank comes last as <blk>."""
    v = len(pieces)
    lines = []
    for s in range(v):
        piece = pieces[(s + TOKENIZER_ID_OFFSET) % v]
        symbol = BLANK_SYMBOL if s == v - 1 else piece.replace(" ", SPACE_PIECE)  # the char tokenizer's space
        if s < v - 1 and (not symbol or symbol == BLANK_SYMBOL or any(ch.isspace() for ch in symbol)):
            raise UserError(f"tokenizer piece {piece!r} cannot be a sherpa-onnx symbol (tokens.txt: non-empty, no "
                            f"whitespace, not {BLANK_SYMBOL})")
        lines.append(f"{symbol} {s}\n")
    return "".join(lines)


def encoder_metadata(config, features: dict, comment: str) -> dict[str, str]:
    """The encoder graph's metadata_props for sherpa-onnx; `features` as model.json records the kaldi front end."""
    return {
        "model_type": "EncDecRNNTBPEModel",  # NeMo's class; sherpa-onnx does not check it, tools print it
        "vocab_size": str(config.vocab_size - 1),  # NeMo counts no blank; sherpa adds it back
        "subsampling_factor": str(config.subsampling),
        "pred_rnn_layers": str(config.pred_layers),
        "pred_hidden": str(config.pred_hidden),
        "normalize_type": NORMALIZE_TYPES[bool(features["normalize"])],
        "feat_dim": str(features["n_mels"]),
        "is_giga_am": "0",
        "comment": comment,
    }


def online_encoder_metadata(config, features: dict, stream: dict, comment: str) -> dict[str, str]:
    """The streaming encoder graph's metadata_props for sherpa-onnx's OnlineRecognizer (2.0.1,
    online-transducer-nemo-model.cc InitEncoder): a window of feature frames per call advancing by as many (the
    graph caches its own left context, so windows do not overlap), the three caches' sizes past the batch."""
    caches = stream["caches"]
    meta = {
        "model_type": "EncDecRNNTBPEModel",
        "vocab_size": str(config.vocab_size - 1),
        "window_size": str(stream["chunk_frames"] * config.subsampling),
        "chunk_shift": str(stream["chunk_frames"] * config.subsampling),
        "subsampling_factor": str(config.subsampling),
        "pred_rnn_layers": str(config.pred_layers),
        "pred_hidden": str(config.pred_hidden),
        "normalize_type": NORMALIZE_TYPES[bool(features["normalize"])],
        "feat_dim": str(features["n_mels"]),
        "comment": comment,
    }
    for name in ("cache_last_channel", "cache_last_time"):
        for i, n in enumerate(caches[name][1:], start=1):
            meta[f"{name}_dim{i}"] = str(n)
    return meta


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    """Set the keys of `meta` in the metadata_props of the ONNX model at `path` (the others stay)."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in [*kept, *meta.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
