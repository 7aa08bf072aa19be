"""Hostile model files made in tmp_path: a checkpoint whose unpickling would run code (harmlessly: it creates a
marker file), and a checkpoint in the format of an older fastasr (NumPy RNG state as an ndarray)."""

from __future__ import annotations

import random

import numpy as np
import torch
from asr_helpers import tiny_model

from fastasr.training.config import preset


class MakesMarker:
    """Unpickling this object opens (creates) the marker file: what a hostile checkpoint's code would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def hostile_checkpoint(path, marker):
    """A checkpoint that is fine in every respect but one: it also holds an object whose unpickling runs code."""
    model = tiny_model()
    config = {**preset("tiny").to_dict(), "model": model.config.to_dict()}
    torch.save({"config": config, "model": model.state_dict(), "step": 1,
                "tokenizer": {"type": "char", "alphabet": " абвгдежзийклмнопрстуфхцчшщъыьэюя"},
                "extra": MakesMarker(marker)}, path)
    return path


def old_rng_state() -> dict:
    """What checkpoints held as `rng` before they were read as data only: np.random.get_state() as it is."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def old_format(ckpt: dict, path, ranks: int = 1):
    """`ckpt` saved as an older fastasr saved it: each rank's RNG state with NumPy's ndarray in it."""
    torch.save({**ckpt, "rng": [old_rng_state() for _ in range(ranks)]}, path)
    return path
