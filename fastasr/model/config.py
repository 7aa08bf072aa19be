"""The model's shape: what a checkpoint's `config["model"]` holds and `Transducer` is built from.

MAX_SIZES bounds each size setting far above any real transducer (the base preset: d_model 512, 16 layers, 8 heads,
predictor and joint 640; billion-parameter Conformers use d_model about 1024 and some 40 layers), so that a typo
(`model.d_model=100000000`: a 128 GB weight matrix) is refused by name before anything is allocated. The training
settings are checked against them (fastasr.training.config.RULES), and so is a checkpoint's (fastasr.model.checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MAX_SIZES = {"n_mels": 512, "subsampling_channels": 4096, "d_model": 8192, "n_layers": 256, "n_heads": 256,
             "ff_mult": 64, "conv_kernel": 1023, "pred_embed": 8192, "pred_hidden": 8192, "pred_layers": 64,
             "joint_dim": 8192, "vocab_size": 1 << 20}

FRONTENDS = ("logmel", "kaldi")
LEGACY_FRONTEND = "logmel"  # what a model's settings without `frontend` (written before it existed) were trained on


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
    # The feature front end (FRONTENDS): "kaldi", kaldi-native-fbank's fbank as sherpa-onnx computes it for NeMo
    # transducers (fastasr.model.fbank.KaldiFbank) on the raw waveform, so an export runs in sherpa-onnx as it is;
    # "logmel", fastasr's own log-mel (fastasr.model.features.LogMel) on the peak-normalised, pre-emphasised
    # waveform. kaldi is the default since it measured no worse in the demo setting (benchmarks/RESULTS.md); a
    # checkpoint written before the setting existed is "logmel" (LEGACY_FRONTEND, filled in where it is read).
    frontend: str = "kaldi"
    # Streaming (fastasr.model.streaming). streaming: the encoder sees no future beyond the chunk it is in (chunked
    # self-attention, a causal depthwise convolution; the subsampling already reads nothing past its own window), so
    # it can run chunk by chunk with caches. chunk_frames: encoder frames per chunk that dynamic chunk training draws
    # from, uniformly per batch, -1 meaning full context (list -1 twice to train full context more often).
    # left_chunks: chunks of left context each chunk attends to (-1: all). A checkpoint written before the settings
    # existed is non-streaming.
    streaming: bool = False
    chunk_frames: str = "8,16,32,-1"
    left_chunks: int = 4

    @staticmethod
    def parse_chunk_frames(text: str) -> tuple[int, ...] | None:
        """model.chunk_frames ("8,16,32,-1") as chunk sizes; None when it is not a list of sizes >= 1 or -1."""
        try:
            sizes = tuple(int(s) for s in text.replace(" ", "").split(","))
        except ValueError:
            return None
        return sizes if all(s >= 1 or s == -1 for s in sizes) else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Settings as a checkpoint stores them; without `frontend` (written before it existed): LEGACY_FRONTEND."""
        return cls(**{"frontend": LEGACY_FRONTEND, **d})
