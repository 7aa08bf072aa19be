"""Model files: reading a checkpoint, the model it holds, and the digest that names its weights.

What a training run writes around these (step checkpoints, last.pt, averaging, RNG state) is
fastasr.training.checkpoints'; this is the part every reader of a model file needs (evaluation, transcription,
export, averaging, warm starts, resuming).

A checkpoint is data, never code: `load` reads it with torch's weights-only unpickler (tensors, dicts, lists,
tuples, sets, str, bytes, numbers), so a file that would construct any other Python object is refused before it
runs anything. A checkpoint from a fastasr that stored NumPy RNG state is such a file: the refusal names
`fastasr convert-checkpoint`, which rewrites it once, on purpose (`load_legacy`: the same unpickler, NumPy's arrays
and scalars allowed besides, so no code runs there either). What a file
claims is checked before it is acted on: its model settings (types, fastasr.model.config.MAX_SIZES) and that its
weights are exactly the size those settings build (parameter_count), so a small file cannot make a reader build a
huge model. Every refusal is one UserError naming the file.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
import re
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from fastasr.errors import UserError
from fastasr.model.config import FRONTENDS, LEGACY_FRONTEND, MAX_SIZES, ModelConfig
from fastasr.model.transducer import Transducer, parameter_count
from fastasr.text.tokenizer import AnyTokenizer, tokenizer_of

CONVERT = "fastasr convert-checkpoint"

# torch < 2.5's weights-only unpickler lacks the one global through which pickle protocol 2 (torch.save's) writes
# bytes, a SentencePiece model's; later versions allow it by default (pytorch/pytorch#133163). Encoding a string
# runs nothing else.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([codecs.encode])


def _refused_object(exc: Exception) -> str | None:
    """The class or function torch's weights-only unpickler refused to construct, from its message; None when it
    refused the file for another reason (not a pickle: random bytes, a torn file)."""
    text = str(exc)
    m = (re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(r"Unsupported global: (\S+)", text)
         or re.search(r"but got (<class [^>]+>)", text))
    return m.group(1) if m else None


def _legacy_globals() -> list:
    """What an older fastasr's checkpoint holds besides tensors and plain values: np.random.get_state()'s key array
    and NumPy scalars. These build arrays and scalars of a dtype and nothing else; an object array's elements would
    still go through the unpickler's refusal."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numeric = [type(np.dtype(code)) for code in "?bhilqBHILQefdFD"]  # NumPy 2's dtype classes, numbers only
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *numeric]


def _read(path: Path, map_location, legacy: bool = False) -> object:
    """The file through torch's weights-only unpickler; legacy: also NumPy's arrays and scalars (_legacy_globals),
    which only `fastasr convert-checkpoint` reads."""
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint (expected a .pt file written by `fastasr train` or "
                        "`fastasr average`)")
    try:
        with warnings.catch_warnings():
            # A pickle not written by torch.save (protocol 4) is refused below, in one line.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            if not legacy:
                return torch.load(path, map_location=map_location, weights_only=True)
            with torch.serialization.safe_globals(_legacy_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_object(exc)
        if refused is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            raise UserError(f"{path}: not a fastasr checkpoint ({detail.group(1) if detail else 'unreadable'})"
                            ) from None
        if legacy:
            raise UserError(f"{path}: holds Python objects other than an older fastasr's NumPy state ({refused}), "
                            "and fastasr loads no code from a model file") from None
        raise UserError(f"{path}: holds Python objects, not only tensors and plain values ({refused}), and fastasr "
                        "loads no code from a model file; if it is a checkpoint of an older fastasr that you trust, "
                        f"convert it once: {CONVERT} {path} NEW.pt") from None
    except Exception as exc:  # random bytes, a torn zip: torch names no single type
        raise UserError(f"{path}: not a fastasr checkpoint ({_said(exc)})") from None


def _said(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """A fastasr checkpoint as a dict, read as data only and checked (see above); UserError naming `path`."""
    path = Path(path)
    ckpt = _read(path, map_location)
    check(ckpt, path)
    return ckpt


def load_legacy(path: str | os.PathLike) -> dict:
    """A checkpoint of an older fastasr, which stored NumPy RNG state: the weights-only unpickler with NumPy's
    arrays and scalars allowed, and nothing else, so no code runs here either. Only for
    `fastasr convert-checkpoint`, which rewrites it as plain values."""
    path = Path(path)
    ckpt = _read(path, "cpu", legacy=True)
    check(ckpt, path)
    return ckpt


def model_config(d: object, path) -> ModelConfig:
    """A checkpoint's `config["model"]` as a ModelConfig: known settings of the right type, sizes in
    MAX_SIZES; UserError naming `path` and the setting otherwise."""
    if not isinstance(d, dict):
        raise UserError(f"{path}: its config holds no model settings; is it a checkpoint written by `fastasr train`?")
    kinds = {f.name: type(f.default) for f in fields(ModelConfig)}
    for name, value in d.items():
        if name not in kinds:
            raise UserError(f"{path}: unknown model setting {name!r} (a checkpoint of another fastasr version?); "
                            f"this one knows {', '.join(kinds)}")
        kind = kinds[name]
        if not (isinstance(value, kind) or (kind is float and isinstance(value, int))) or (
                isinstance(value, bool) and kind is not bool):
            raise UserError(f"{path}: model setting {name}={value!r} is not a {kind.__name__}")
        top = MAX_SIZES.get(name)
        if top is not None and not 1 <= value <= top:
            raise UserError(f"{path}: model setting {name}={value} is outside 1..{top}")
    try:
        return ModelConfig(**d)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: bad model settings ({exc})") from None


def check(ckpt: object, path) -> ModelConfig:
    """That `ckpt` is a checkpoint whose weights are exactly what its model settings build; its ModelConfig."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"),
                                                                                                   dict):
        raise UserError(f"{path}: not a fastasr checkpoint (it has no config and model weights); expected a file "
                        "written by `fastasr train` or `fastasr average`")
    settings = ckpt["config"].get("model")
    if isinstance(settings, dict) and "frontend" not in settings:  # written before the setting: fastasr's log-mel
        ckpt["config"]["model"] = settings = {**settings, "frontend": LEGACY_FRONTEND}
    config = model_config(settings, path)
    weights = ckpt["model"]
    if not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise UserError(f"{path}: its model weights are not all tensors")
    held, needed = sum(t.numel() for t in weights.values()), _buildable(config, path)
    if held != needed:
        raise UserError(f"{path}: holds {held:,} weights, but its model settings build {needed:,}; the file is "
                        "damaged or not a fastasr checkpoint")
    return config


def _buildable(config: ModelConfig, path) -> int:
    if config.encoder not in ("conformer", "lstm") or config.subsampling not in (2, 4, 8):
        raise UserError(f"{path}: model settings encoder={config.encoder!r}, subsampling={config.subsampling} "
                        "(fastasr builds conformer or lstm, subsampling 2, 4 or 8)")
    if config.encoder == "conformer" and config.d_model % config.n_heads:
        raise UserError(f"{path}: model setting d_model={config.d_model} is not divisible by n_heads="
                        f"{config.n_heads}")
    if config.frontend not in FRONTENDS:
        raise UserError(f"{path}: model setting frontend={config.frontend!r} (fastasr knows {', '.join(FRONTENDS)})")
    if config.streaming and (config.encoder != "conformer" or config.frontend != "kaldi" or config.left_chunks < -1
                             or ModelConfig.parse_chunk_frames(config.chunk_frames) is None):
        raise UserError(f"{path}: model settings streaming=true, encoder={config.encoder!r}, chunk_frames="
                        f"{config.chunk_frames!r}, left_chunks={config.left_chunks}, frontend={config.frontend!r} "
                        "(a streaming model is a conformer on the kaldi front end, chunk sizes >= 1 or -1, "
                        "left_chunks >= -1)")
    if config.vocab_size < 2:
        raise UserError(f"{path}: model setting vocab_size={config.vocab_size}; a trained model has at least 2")
    # a streaming encoder's state also holds its features' global mean and std (Encoder.feat_mean, feat_std)
    return parameter_count(config) + (2 * config.n_mels if config.streaming else 0)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in state-dict order: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_of(ckpt: dict, path) -> Transducer:
    """The checkpoint's model (in train mode, on the CPU), from a checkpoint `load` returned."""
    model = Transducer(ModelConfig.from_dict(ckpt["config"]["model"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # names or shapes that differ: the count matched, the layout does not
        raise UserError(f"{path}: its weights do not fit its model settings ({' '.join(str(exc).split())[:300]})"
                        ) from None
    return model


def load_model(path: str | os.PathLike,
               device: str | torch.device = "cpu") -> tuple[Transducer, AnyTokenizer, ModelConfig]:
    """A checkpoint's model in eval mode on `device`, with its tokenizer and model settings."""
    ckpt = load(path)
    model = model_of(ckpt, path)
    return model.to(device).eval(), tokenizer_of(ckpt, path), model.config
