"""The RNN-Transducer: convolutional subsampling → encoder (Conformer or BiLSTM) → LSTM predictor → joiner.

The joiner is `act(enc_proj[:, :, None] + pred_proj[:, None]) -> Linear(H, V)` (DESIGN.md); training never builds
that 4-D tensor but hands `enc_proj`, `pred_proj` and the output layer's weight and bias to `fused_rnnt_loss`.
Padded frames are masked after every layer that mixes time, so a batched utterance encodes exactly as it does alone.
The Conformer's pieces are fastasr.model.conformer's; a streaming model's chunk masks and cached chunk step are
fastasr.model.streaming's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fastasr.model.conformer import ConformerBlock, ConvSubsampling, lengths_to_mask
from fastasr.model.config import ModelConfig
from fastasr.model.streaming import chunk_attention_mask, draw_chunk_frames

__all__ = ["ConvSubsampling", "Encoder", "Joiner", "Predictor", "Transducer", "count_parameters", "lengths_to_mask",
           "log_mel", "parameter_count", "waveform_of"]


class Encoder(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.kind, self.streaming = c.encoder, c.streaming
        self.subsampling = ConvSubsampling(c.n_mels, c.subsampling_channels, c.d_model, c.subsampling,
                                           streaming=c.streaming)
        if c.encoder == "conformer":
            self.layers = nn.ModuleList(ConformerBlock(c) for _ in range(c.n_layers))
        elif c.encoder == "lstm":
            if c.streaming:
                raise ValueError("a streaming model needs encoder 'conformer' (the BiLSTM reads the whole utterance)")
            self.lstm = nn.LSTM(c.d_model, c.d_model // 2, num_layers=c.n_layers, batch_first=True,
                                bidirectional=True, dropout=c.dropout if c.n_layers > 1 else 0.0)
        else:
            raise ValueError(f"unknown encoder {c.encoder!r}; use 'conformer' or 'lstm'")
        if c.streaming:
            # The features' global mean and std per bin (a streaming model's front end is not normalised per
            # utterance, and raw log-mel sits near -10): measured on the training data when a run starts
            # (fastasr.training.setup), saved with the weights, applied here, so every export normalises too.
            self.register_buffer("feat_mean", torch.zeros(c.n_mels))
            self.register_buffer("feat_std", torch.ones(c.n_mels))
            self.chunk_sizes, self.left_chunks = ModelConfig.parse_chunk_frames(c.chunk_frames), c.left_chunks
            if self.chunk_sizes is None or c.left_chunks < -1:
                raise ValueError(f"streaming settings chunk_frames={c.chunk_frames!r}, left_chunks={c.left_chunks}: "
                                 "want sizes >= 1 or -1, and left_chunks >= -1")

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """A streaming model's features over its global statistics; the others' as they are."""
        if not self.streaming:
            return feats
        return (feats - self.feat_mean.to(feats.dtype)) / self.feat_std.to(feats.dtype)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, chunk_frames: int | None = None,
                left_chunks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """chunk_frames: a streaming model's encoder frames per attention chunk (None or -1: full context); in
        training mode with None it draws one per batch from model.chunk_frames. left_chunks: chunks of left context
        (-1: all; None: model.left_chunks). A non-streaming model takes neither."""
        if not self.streaming and (chunk_frames not in (None, -1) or left_chunks is not None):
            raise ValueError(f"chunk_frames={chunk_frames}, left_chunks={left_chunks} need a streaming model "
                             "(model.streaming=true); this one sees the whole utterance")
        if (chunk_frames is not None and chunk_frames < 1 and chunk_frames != -1) or (
                left_chunks is not None and left_chunks < -1):
            raise ValueError(f"chunk_frames={chunk_frames}, left_chunks={left_chunks}: want a chunk of >= 1 frames "
                             "or -1 (full context), and left_chunks >= -1")
        x, lens = self.subsampling(self.normalize(feats), feat_lens)  # (B, T', D)
        mask = lengths_to_mask(lens, x.shape[1])
        if self.kind == "conformer":
            attn_mask = None
            if self.streaming:
                if chunk_frames is None and self.training:
                    chunk_frames = draw_chunk_frames(self.chunk_sizes)
                left = self.left_chunks if left_chunks is None else left_chunks
                attn_mask = chunk_attention_mask(mask, chunk_frames, left)  # (B, 1, T', T')
            for layer in self.layers:
                x = layer(x, mask, attn_mask)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=mask.shape[1])
        return x, lens


class Predictor(nn.Module):
    """Embedding + LSTM over the label history; blank (0) is the start symbol."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.pred_embed)
        self.lstm = nn.LSTM(c.pred_embed, c.pred_hidden, num_layers=c.pred_layers, batch_first=True,
                            dropout=c.dropout if c.pred_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, tokens: torch.Tensor, state=None):
        y, state = self.lstm(self.drop(self.embed(tokens)), state)  # (B, U, H)
        return self.drop(y), state


class Joiner(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.enc_proj = nn.Linear(c.d_model, c.joint_dim)
        self.pred_proj = nn.Linear(c.pred_hidden, c.joint_dim)
        self.out = nn.Linear(c.joint_dim, c.vocab_size)

    def forward(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """Logits for matching shapes (broadcast by the caller), e.g. (N, H) + (N, H) → (N, V)."""
        return self.out(torch.tanh(enc_proj + pred_proj))


class Transducer(nn.Module):
    blank = 0

    def __init__(self, c: ModelConfig):
        super().__init__()
        assert c.vocab_size > 1, f"vocab_size must be set from the tokenizer, got {c.vocab_size}"
        self.config = c
        self.encoder = Encoder(c)
        self.predictor = Predictor(c)
        self.joiner = Joiner(c)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor, chunk_frames: int | None = None,
               left_chunks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T, F) → projected encoder output (B, T', H) for the joiner and exact lengths (B,);
        chunk_frames, left_chunks: a streaming model's attention chunks (Encoder.forward)."""
        enc, lens = self.encoder(feats, feat_lens, chunk_frames, left_chunks)
        return self.joiner.enc_proj(enc), lens

    def predict(self, tokens: torch.Tensor, state=None):
        """Labels (B, U) → projected predictor output (B, U, H) and the LSTM state."""
        y, state = self.predictor(tokens, state)
        return self.joiner.pred_proj(y), state

    def encoded_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        """The encoder's output frames per utterance: the same arithmetic as ``encode``, on any device."""
        sub = self.encoder.subsampling
        return sub.output_lengths(feat_lens, sub.n_layers)

    def forward(self, feats, feat_lens, tokens, token_lens, host_lengths=None,
                delay_penalty: float = 0.0) -> torch.Tensor:
        """Mean RNN-T loss per utterance. The joint + loss run fused: under autocast the joint's GEMMs take
        autocast's dtype (bf16 on the tensor cores), while log-softmax, the lattice and the gradient sums stay
        float32.

        host_lengths: (encoded_lengths(feat_lens), token_lens) computed on the CPU from the CPU batch, which spares
        the loss its one device-to-host copy (the step then never waits for the GPU). The loss lives in forward
        (not a side method) so DistributedDataParallel's forward hook sees the call.
        delay_penalty: k2's delay penalty (``fastasr.loss.rnnt_loss``); 0 is the plain loss.
        """
        from fastasr.loss import fused_rnnt_loss

        enc, enc_lens = self.encode(feats, feat_lens)  # (B, T', H)
        start = torch.full((tokens.shape[0], 1), self.blank, dtype=tokens.dtype, device=tokens.device)
        pred, _ = self.predict(torch.cat([start, tokens], dim=1))  # (B, U+1, H)
        out = self.joiner.out
        return fused_rnnt_loss(enc, pred, out.weight, out.bias, tokens, enc_lens, token_lens, blank=self.blank,
                               reduction="mean", activation="tanh", host_lengths=host_lengths,
                               delay_penalty=delay_penalty)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _lstm_parameters(inputs: int, hidden: int, layers: int, directions: int = 1) -> int:
    per_layer_direction = [4 * hidden * ((inputs if i == 0 else hidden * directions) + hidden + 2)
                           for i in range(layers)]
    return directions * sum(per_layer_direction)


def parameter_count(c: ModelConfig) -> int:
    """count_parameters(Transducer(c)) from the settings alone, without allocating: a checkpoint's weights are
    checked against it before its model is built, so a file of a few bytes cannot make a reader build a huge model
    (tests/model/test_transducer.py holds it equal to the built model's count). Streaming adds no weights: the causal
    convolution has the centred one's kernel, the norms stay LayerNorm."""
    d, linear = c.d_model, (lambda i, o: i * o + o)
    channels, freqs, convs = c.subsampling_channels, c.n_mels, int(math.log2(c.subsampling))
    n = 0
    for i in range(convs):
        n += linear(9 * (1 if i == 0 else channels), channels)
        freqs = (freqs - 1) // 2 + 1
    n += linear(channels * freqs, d)
    if c.encoder == "conformer":
        ff = 2 * d + linear(d, d * c.ff_mult) + linear(d * c.ff_mult, d)
        attn = 2 * d + linear(d, 3 * d) + linear(d, d)
        conv = 2 * d + linear(d, 2 * d) + linear(c.conv_kernel, d) + 2 * d + linear(d, d)
        n += c.n_layers * (2 * ff + attn + conv + 2 * d)
    else:
        n += _lstm_parameters(d, d // 2, c.n_layers, directions=2)
    n += c.vocab_size * c.pred_embed + _lstm_parameters(c.pred_embed, c.pred_hidden, c.pred_layers)
    return n + linear(d, c.joint_dim) + linear(c.pred_hidden, c.joint_dim) + linear(c.joint_dim, c.vocab_size)


def log_mel(c: ModelConfig):
    """The feature front end a model of this config was trained with: fastasr.model.features.LogMel ("logmel") or
    fastasr.model.fbank.KaldiFbank ("kaldi"); each maps (audio (B, S), lengths (B,)) → (feats (B, T, n_mels),
    lengths (B,)), fed the waveform that waveform_of(c) names."""
    if c.frontend == "kaldi":
        from fastasr.model.fbank import FbankSettings, KaldiFbank

        if c.streaming:
            # A streaming model's features cannot be normalised per utterance (that reads the whole of it): its
            # frames depend on their own samples only (fastasr.audio.fbank_stream), and they are the ones
            # sherpa-onnx's OnlineRecognizer computes for a NeMo transducer, which has no normalisation.
            return KaldiFbank(settings=FbankSettings.sherpa_nemo_online(c.n_mels))
        return KaldiFbank(n_mels=c.n_mels)
    from fastasr.model.features import LogMel

    return LogMel(n_mels=c.n_mels)


def waveform_of(c: ModelConfig) -> str:
    """How the model's front end wants the 16-kHz waveform (fastasr.audio.files.WAVEFORMS)."""
    return "raw" if c.frontend == "kaldi" else "peak_preemphasis"
