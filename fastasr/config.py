"""Training configuration: one frozen dataclass per concern, presets, CLI overrides, and the dict form checkpoints carry.

Overrides are `section.field=value` strings (`model.d_model=256`, `optim.lr=5e-4`); the value is parsed with the
type of the field's default, so a typo in a name or a type fails loudly instead of being ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


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


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 300
    min_lr_ratio: float = 0.05
    decay_steps: int = 20000  # cosine horizon when neither --max-steps nor --max-minutes is given
    grad_clip: float = 5.0


@dataclass(frozen=True)
class DataConfig:
    max_batch_seconds: float = 60.0  # per rank
    num_workers: int = 2
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 4
    time_width: float = 0.05
    val_utterances: int = 200  # the fixed validation subset (first N of val, in index order)
    val_batch_seconds: float = 120.0


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 0  # 0: no step limit
    max_minutes: float = 0.0  # 0: no time limit
    seed: int = 1234
    log_every: int = 10  # also how often the host waits for the device and checks max_minutes
    val_every: int = 200
    ckpt_every: int = 200
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch intra-op threads on CPU; 0 = leave torch's default
    progress: bool = True


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name: f.type for f in fields(cls)}
        sections = {"model": ModelConfig, "optim": OptimConfig, "data": DataConfig, "train": TrainConfig}
        assert set(d) <= set(known), f"unknown config sections {sorted(set(d) - set(known))}"
        return cls(**{name: sections[name](**d.get(name, {})) for name in sections})


PRESETS: dict[str, dict[str, dict]] = {
    # Learns on a 2-core CPU in ~20 minutes: 8x subsampling keeps the encoder short (12.5 frames/s).
    "tiny": {
        "model": dict(subsampling=8, subsampling_channels=32, d_model=96, n_layers=3, n_heads=4, ff_mult=4,
                      conv_kernel=15, dropout=0.05, pred_embed=64, pred_hidden=128, joint_dim=160),
        "optim": dict(lr=3e-3, warmup_steps=150, decay_steps=3000),
        "data": dict(max_batch_seconds=40.0, num_workers=1, val_utterances=100),
        "train": dict(val_every=200, ckpt_every=200, log_every=10),
    },
    "small": {
        "model": dict(subsampling=4, subsampling_channels=128, d_model=256, n_layers=8, n_heads=4,
                      conv_kernel=31, dropout=0.1, pred_embed=256, pred_hidden=320, joint_dim=320),
        "optim": dict(lr=1.5e-3, warmup_steps=500, decay_steps=10000),
        "data": dict(max_batch_seconds=600.0, num_workers=6, val_utterances=300),
        "train": dict(val_every=500, ckpt_every=500, log_every=20),
    },
    "base": {
        "model": dict(subsampling=4, subsampling_channels=256, d_model=512, n_layers=16, n_heads=8,
                      conv_kernel=31, dropout=0.1, pred_embed=256, pred_hidden=640, pred_layers=1, joint_dim=640),
        "optim": dict(lr=1e-3, warmup_steps=2000, decay_steps=100000),
        "data": dict(max_batch_seconds=1200.0, num_workers=8, val_utterances=500),
        "train": dict(val_every=1000, ckpt_every=1000, log_every=50),
    },
}


def _parse_value(text: str, like):
    if isinstance(like, bool):
        low = text.lower()
        if low not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"expected a boolean, got {text!r}")
        return low in ("1", "true", "yes")
    return type(like)(text)


def apply_overrides(config: Config, overrides: dict[str, dict] | list[str]) -> Config:
    """`{"model": {"d_model": 256}}` or `["model.d_model=256", …]` applied on top of `config`."""
    if isinstance(overrides, list):
        nested: dict[str, dict] = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            section, dot, name = key.partition(".")
            if not sep or not dot:
                raise ValueError(f"override {item!r} is not of the form section.field=value")
            nested.setdefault(section, {})[name] = value
        overrides = nested
    for section, values in overrides.items():
        if section not in ("model", "optim", "data", "train"):
            raise ValueError(f"unknown config section {section!r}")
        current = getattr(config, section)
        names = {f.name for f in fields(current)}
        parsed = {}
        for name, value in values.items():
            if name not in names:
                raise ValueError(f"unknown setting {section}.{name}; known: {sorted(names)}")
            like = getattr(current, name)
            parsed[name] = _parse_value(value, like) if isinstance(value, str) and not isinstance(like, str) else value
        config = replace(config, **{section: replace(current, **parsed)})
    return config


def preset(name: str, overrides: dict[str, dict] | list[str] | None = None) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    config = apply_overrides(Config(), PRESETS[name])
    return apply_overrides(config, overrides or {})


__all__ = ["ModelConfig", "OptimConfig", "DataConfig", "TrainConfig", "Config", "PRESETS", "preset",
           "apply_overrides"]
