"""The model's shape: what a checkpoint's `config["model"]` holds and `Transducer` is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    n_mels: int = 80
    subsampling: int = 4  # 4 (two stride-2 convs) or 8 (three)
    subsampling_channels: int = 64
    encoder: str = "conformer"  # "conformer" or "lstm"
    d_model: int = 144
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    dropout: float = 0.1
    pred_embed: int = 128
    pred_hidden: int = 256
    pred_layers: int = 1
    joint_dim: int = 256
    vocab_size: int = 0  # filled in from the shard index's tokenizer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)
