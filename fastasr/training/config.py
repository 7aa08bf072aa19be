"""Training configuration: one frozen dataclass per concern, presets, CLI overrides, and the dict form checkpoints carry.

Settings come in layers: the dataclass defaults, a preset, a `--config` file (JSON or YAML, `{section: {field:
value}}`, the shape of RUN/config.json), then `section.field=value` overrides (`model.d_model=256`,
`optim.lr=5e-4`). An override's value is parsed with the type of the field's default, and a file's typed values are
checked against it, so a typo in a name or a type fails loudly instead of being ignored: a UserError that
names the key and what it accepts. `check` refuses values outside what the model and the loop accept.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields, replace

from fastasr.errors import UserError, did_you_mean
from fastasr.model.config import FRONTENDS, MAX_SIZES, ModelConfig


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
    accum_steps: int = 1  # batches per optimiser step; steps, warm-up and the schedule count optimiser steps


@dataclass(frozen=True)
class DataConfig:
    max_batch_seconds: float = 60.0  # per rank
    num_workers: int = 2
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 4
    time_width: float = 0.05
    val_utterances: int = 200  # the fixed validation subset: N from the heads of <= 4 val shards
    val_batch_seconds: float = 120.0
    speed_perturb: str = ""  # e.g. "0.9,1.0,1.1": one factor drawn per utterance and epoch (train only); "": off
    # Seconds: a longer utterance (by its planned duration, and again by its audio header) is skipped and counted
    # as too_long, never batched; 60 s is twice the longest `fastasr shard` keeps by default.
    max_duration: float = 60.0


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 0  # 0: no step limit
    max_minutes: float = 0.0  # 0: no time limit
    seed: int = 1234
    log_every: int = 10  # also how often the host waits for the device and checks max_minutes
    val_every: int = 200
    ckpt_every: int = 200
    keep: int = 5  # step checkpoints RUN/step-XXXXXXX.pt kept beside last.pt (for `fastasr average`); 0: last.pt only
    # An exponential moving average of the weights, written as RUN/ema.pt beside last.pt (decay warmed up as
    # min(ema_decay, (1 + n) / (10 + n)) over the n kept steps; see step.EMA); 0: off.
    ema_decay: float = 0.0
    # k2's delay penalty on the training loss (fastasr.loss.rnnt_loss's delay_penalty), per encoder frame: > 0 makes
    # labels come out earlier (streaming models); 0: the plain RNN-T loss. Applied from the end of the lr warm-up
    # (optim.warmup_steps) on; k2's experiments use 0.0015-0.01. Validation always scores the plain loss.
    delay_penalty: float = 0.0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch intra-op threads on CPU; 0 = leave torch's default
    progress: bool = True
    # Under torchrun: how long a collective waits for a peer before the job fails instead of hanging; longer than
    # rank 0's longest validation or checkpoint save, which the other ranks wait out in their next collective.
    dist_timeout_s: float = 600.0


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
        "optim": dict(lr=3e-3, warmup_steps=1000, decay_steps=3000),
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


SECTIONS = ("model", "optim", "data", "train")


def _parse_value(key: str, text: str, like):
    """`text` as the type of the default `like`; a UserError naming `key` and what it accepts otherwise."""
    if isinstance(like, bool):
        low = text.lower()
        if low not in ("1", "0", "true", "false", "yes", "no"):
            raise UserError(f"{key}={text}: wants true or false (also 1/0, yes/no)")
        return low in ("1", "true", "yes")
    kind = type(like)
    try:
        return kind(text)
    except ValueError:
        what = {int: "an integer, like", float: "a number, like"}.get(kind, "a value like")
        raise UserError(f"{key}={text}: wants {what} {like}") from None


def _typed(key: str, value, like):
    """A value that came typed (a config file, a preset) checked against the default's type; an int is a float."""
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(like):
        raise UserError(f"{key}: {value!r} is a {type(value).__name__}; it wants a {type(like).__name__} like {like!r}")
    return value


def apply_overrides(config: Config, overrides: dict[str, dict] | list[str]) -> Config:
    """`{"model": {"d_model": 256}}` or `["model.d_model=256", …]` applied on top of `config`.

    A malformed item, an unknown section or setting, or a value of the wrong type raises UserError naming it."""
    if isinstance(overrides, list):
        nested: dict[str, dict] = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            section, dot, name = key.partition(".")
            if not sep or not dot:
                raise UserError(f"override {item!r} is not of the form section.field=value (e.g. model.d_model=256)"
                                + (_section_hint(config, key, value) if sep else ""))
            nested.setdefault(section, {})[name] = value
        overrides = nested
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise UserError(f"{section}: no such config section{did_you_mean(section, SECTIONS)}; the sections are "
                            f"{', '.join(SECTIONS)}")
        current = getattr(config, section)
        names = [f.name for f in fields(current)]
        parsed = {}
        for name, value in values.items():
            if name not in names:
                raise UserError(f"{section}.{name}: unknown setting"
                                f"{did_you_mean(name, names).replace('mean ', f'mean {section}.')}; {section} has "
                                f"{', '.join(names)}")
            like = getattr(current, name)
            parsed[name] = (_parse_value(f"{section}.{name}", value, like)
                            if isinstance(value, str) and not isinstance(like, str)
                            else _typed(f"{section}.{name}", value, like))
        config = replace(config, **{section: replace(current, **parsed)})
    return config


def _section_hint(config: Config, name: str, value: str) -> str:
    """' (did you mean train.max_steps=20?)' for a bare `max_steps=20`: the section(s) with that setting (or a close one)."""
    owners = {f.name: section for section in SECTIONS for f in fields(getattr(config, section))}
    close = [name] if name in owners else difflib.get_close_matches(name, list(owners), n=1, cutoff=0.6)
    return f" (did you mean {owners[close[0]]}.{close[0]}={value}?)" if close else ""


def speed_factors(text: str) -> tuple[float, ...]:
    """data.speed_perturb ("0.9,1.0,1.1") as factors; () when off. ValueError when malformed."""
    factors = tuple(float(f) for f in text.replace(" ", "").split(",") if f)
    if any(not 0.5 <= f <= 2.0 for f in factors):
        raise ValueError(f"factors must lie in [0.5, 2], got {factors}")
    return factors


def _speed_list(text: str) -> bool:
    try:
        speed_factors(text)
    except ValueError:
        return False
    return True


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _fraction(v) -> bool:
    return 0 <= v < 1


def _size(name: str) -> tuple:
    top = MAX_SIZES[name]
    return (lambda v: 1 <= v <= top), f"1..{top}"


# setting → (test, what is accepted); the rest (seeds, vocab_size) take any value of their type.
RULES = {
    # Sizes: 1 up to fastasr.model.config.MAX_SIZES (generous bounds; a typo must not ask for terabytes).
    **{f"model.{k}": _size(k) for k in ("n_mels", "subsampling_channels", "d_model", "n_layers", "n_heads",
                                        "ff_mult", "pred_embed", "pred_hidden", "pred_layers", "joint_dim")},
    "model.subsampling": (lambda v: v in (2, 4, 8), "2, 4 or 8"),
    "model.encoder": (lambda v: v in ("conformer", "lstm"), "conformer or lstm"),
    "model.frontend": (lambda v: v in FRONTENDS, " or ".join(FRONTENDS)
                       + " (kaldi: the fbank sherpa-onnx computes, so an export runs there as it is)"),
    "model.conv_kernel": (lambda v: 0 < v <= MAX_SIZES["conv_kernel"] and v % 2 == 1,
                          f"an odd number in 1..{MAX_SIZES['conv_kernel']} (the convolution keeps the length)"),
    "model.dropout": (_fraction, "0 <= p < 1"),
    "model.chunk_frames": (lambda v: ModelConfig.parse_chunk_frames(v) is not None,
                           "comma-separated encoder frames per chunk, each >= 1 or -1 (full context), like 8,16,32,-1"),
    "model.left_chunks": (lambda v: v >= -1, ">= 0 chunks of left context, or -1 (all)"),
    "optim.lr": (_non_negative, ">= 0 (0 leaves the weights as they are: a check of --init-from)"),
    "optim.weight_decay": (_non_negative, ">= 0"),
    "optim.beta1": (_fraction, "0 <= beta < 1"),
    "optim.beta2": (_fraction, "0 <= beta < 1"),
    "optim.warmup_steps": (_non_negative, ">= 0"),
    "optim.min_lr_ratio": (lambda v: 0 <= v <= 1, "0 <= ratio <= 1"),
    "optim.decay_steps": (_positive, "> 0"),
    "optim.grad_clip": (_positive, "> 0"),
    "optim.accum_steps": (_positive, ">= 1"),
    "data.max_batch_seconds": (_positive, "> 0"),
    "data.val_batch_seconds": (_positive, "> 0"),
    "data.max_duration": (_positive, "> 0 (seconds; longer utterances are skipped and counted as too_long)"),
    **{f"data.{k}": (_non_negative, ">= 0") for k in ("num_workers", "freq_masks", "freq_width", "time_masks",
                                                       "time_width", "val_utterances")},
    "data.speed_perturb": (_speed_list, "comma-separated factors in [0.5, 2], like 0.9,1.0,1.1 (empty: off)"),
    "train.max_steps": (_non_negative, ">= 0 (0: no step limit)"),
    "train.max_minutes": (_non_negative, ">= 0 (0: no time limit)"),
    **{f"train.{k}": (_positive, ">= 1") for k in ("log_every", "val_every", "ckpt_every")},
    "train.device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "train.threads": (_non_negative, ">= 0 (0: torch's default)"),
    "train.keep": (_non_negative, ">= 0 (0: last.pt only)"),
    "train.ema_decay": (_fraction, "0 <= d < 1 (0: no EMA of the weights; e.g. 0.999)"),
    "train.delay_penalty": (_non_negative, ">= 0 (0: off; > 0 pulls label emissions to earlier frames)"),
    "train.dist_timeout_s": (_positive, "> 0 (seconds a collective waits for a peer)"),
}


def check(config: Config) -> Config:
    """Raise UserError naming the first setting outside what the model and the loop accept."""
    for key, (ok, accepted) in RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not ok(value) or (isinstance(value, float) and value != value):
            raise UserError(f"{key}={value}: wants {accepted}")
    m = config.model
    if m.encoder == "conformer" and m.d_model % m.n_heads:
        raise UserError(f"model.d_model={m.d_model} must be divisible by model.n_heads={m.n_heads}")
    if m.streaming and m.frontend != "kaldi":
        raise UserError(f"model.streaming=true needs model.frontend=kaldi (got {m.frontend}): fastasr's log-mel "
                        "normalises over the whole utterance, the kaldi front end of a streaming model does not")
    if m.streaming and m.encoder != "conformer":
        raise UserError(f"model.streaming=true needs model.encoder=conformer (got {m.encoder}): the LSTM encoder is "
                        "bidirectional")
    return config


def load_file(path) -> dict[str, dict]:
    """A `--config` file: JSON, or YAML (.yaml / .yml) when PyYAML is installed, holding
    `{section: {field: value}}` like RUN/config.json. Applied with apply_overrides, which checks names and types."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UserError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or give the "
                            "settings as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"--config {path}: not valid JSON ({err}); YAML files are named .yaml or .yml") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"--config {path}: wants sections of settings, like {{\"optim\": {{\"lr\": 0.001}}}} "
                        f"(sections: {', '.join(SECTIONS)})")
    return data


def describe(config: Config, preset_name: str | None = None) -> list[str]:
    """Every setting as a `section.field=value` line (the override syntax), a section at a time, with what it does
    (settings_help.HELP) and the preset's value where a run, a config file or an override changed it
    (`preset_name`; else the built-in default)."""
    def show(v) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    from fastasr.training.settings_help import HELP

    reference = apply_overrides(Config(), PRESETS[preset_name]) if preset_name else Config()
    said = f"preset {preset_name}" if preset_name else "default"
    lines = []
    for section in SECTIONS:
        lines.append(f"# {section}")
        for f in fields(getattr(config, section)):
            value, default = getattr(getattr(config, section), f.name), getattr(getattr(reference, section), f.name)
            name = f"{section}.{f.name}"
            note = "" if value == default else f"; {said}: {show(default)}"
            lines.append(f"{name}={show(value)}  # {HELP.get(name, '')}{note}")
    return lines


def preset(name: str, overrides: dict[str, dict] | list[str] | None = None, *,
           file: dict[str, dict] | None = None, base: dict[str, dict] | None = None) -> Config:
    """The preset, then `base` (a run's saved sections, which --resume and --init-from continue), then a config
    file's settings, then the overrides, checked."""
    if name not in PRESETS:
        raise UserError(f"--preset {name!r}: choose from {', '.join(sorted(PRESETS))}")
    config = apply_overrides(Config(), PRESETS[name])
    config = apply_overrides(config, base or {})
    config = apply_overrides(config, file or {})
    return check(apply_overrides(config, overrides or {}))


__all__ = ["ModelConfig", "OptimConfig", "DataConfig", "TrainConfig", "Config", "PRESETS", "preset",
           "apply_overrides", "check", "load_file", "describe"]
