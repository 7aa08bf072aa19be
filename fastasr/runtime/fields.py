"""Reading model.json's fields: each of the type and range the runtime relies on, else a UserError naming the file
and the field (fastasr.runtime.model_dir, fastasr.runtime.stream_spec)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastasr.errors import UserError

# model.json's numbers → the range this runtime accepts, each far beyond a real model's (fastasr exports n_fft 512,
# hop 160, 80 mels, 10 symbols per frame): the runtime allocates frames, filterbanks and states and loops by them.
# At the extremes (n_fft 4096, hop 32) a 30-second piece's spectrogram is ~1 GB, not the terabytes an unchecked
# n_fft=10**9 or hop of 1 would ask for.
LIMITS = {
    "features.sample_rate": (1000, 192_000), "features.n_fft": (2, 4096), "features.win_length": (1, 4096),
    "features.hop_length": (32, 4096), "features.n_mels": (1, 512), "decoding.vocab_size": (2, 1 << 20),
    "decoding.max_symbols_per_frame": (1, 100), "encoder.dim": (1, 8192), "predictor.layers": (1, 64),
    "predictor.hidden": (1, 8192),
}

def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing; expected the {what} that `fastasr export` writes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def field(data: dict, dotted: str, kind: type | tuple, path: Path):
    value = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise UserError(f"{path}: field {dotted!r} is missing")
        value = value[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise UserError(f"{path}: field {dotted!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def number(data: dict, dotted: str, path: Path):
    """A field of `data` that must be a finite number (json reads NaN and Infinity too), within LIMITS if listed."""
    value = field(data, dotted, (int, float), path)
    if not math.isfinite(value):
        raise UserError(f"{path}: field {dotted!r} is {value!r}, expected a finite number")
    if dotted in LIMITS:
        low, high = LIMITS[dotted]
        if not (isinstance(value, int) and low <= value <= high):
            raise UserError(f"{path}: field {dotted!r} is {value!r}, expected an integer in {low}..{high}")
    return value


def inside(directory: Path, name: object, what: str, meta_path: Path) -> Path:
    """directory/name for a file model.json names: a plain file name, and not a link that leads out."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise UserError(f"{meta_path}: {what} is {name!r}; expected a file name inside the export directory")
    target = directory / name
    if target.is_symlink() and not target.resolve().is_relative_to(directory.resolve()):
        raise UserError(f"{meta_path}: {what} {name!r} is a link out of the export directory")
    return target
