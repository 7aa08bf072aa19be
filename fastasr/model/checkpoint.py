"""Model files: reading a checkpoint, the model it holds, and the digest that names its weights.

What a training run writes around these (step checkpoints, last.pt, averaging, RNG state) is
fastasr.training.checkpoints'; this is the part every reader of a model file needs (evaluation, transcription,
export, warm starts).
"""

from __future__ import annotations

import hashlib
import os

import torch

from fastasr.model.config import ModelConfig
from fastasr.model.transducer import Transducer
from fastasr.text.tokenizer import AnyTokenizer, tokenizer_of


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


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


def load_model(path: str | os.PathLike,
               device: str | torch.device = "cpu") -> tuple[Transducer, AnyTokenizer, ModelConfig]:
    """A checkpoint's model in eval mode on `device`, with its tokenizer and model settings."""
    ckpt = load(path)
    config = ModelConfig.from_dict(ckpt["config"]["model"])
    model = Transducer(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), tokenizer_of(ckpt, path), config
