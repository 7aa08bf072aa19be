"""Checkpoints: written atomically (temp file + rename), carrying everything a resumed run or a decoder needs.

Contents: `config` (Config.to_dict()), `alphabet` (the tokenizer), `model`, `optimizer`, `step`, `progress`
(elapsed training seconds, skipped steps), `data` (one {epoch, batches} per rank), `rng` (one set per rank).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from fastasr.config import Config
from fastasr.model import Transducer
from fastasr.text import Tokenizer


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same directory, fsync, rename: a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in state-dict order: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Transducer, Tokenizer, Config]:
    """A checkpoint's model in eval mode on `device`, with its tokenizer and config."""
    ckpt = load(path)
    config = Config.from_dict(ckpt["config"])
    model = Transducer(config.model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), Tokenizer(ckpt["alphabet"]), config
