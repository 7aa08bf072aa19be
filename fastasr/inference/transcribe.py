"""Transcribe audio files with a checkpoint: log-mel on the device → encoder → greedy or beam decoding.

Reading, cutting long recordings, batching by length and input order are fastasr.audio.files' (shared with the
ONNX runtime, fastasr.runtime); this module is the torch recogniser those pieces are handed to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from fastasr.audio.files import Transcript, UnreadableAudio, read_audio, read_mono, split_long, transcribe_files
from fastasr.errors import UserError
from fastasr.model.checkpoint import load_model, pick_device
from fastasr.model.decode import decode, greedy_batch_timed
from fastasr.model.streaming import FRAME_MS
from fastasr.model.transducer import log_mel, waveform_of
from fastasr.text.timestamps import word_times

__all__ = ["iter_transcripts", "transcribe", "checkpoint_recogniser", "Transcript", "UnreadableAudio",
           "read_audio", "read_mono", "split_long"]


class CheckpointRecogniser:
    """`recognise(pieces) -> texts` for 16-kHz pieces conditioned as `waveform` says (the model's front end:
    fastasr.model.transducer.waveform_of), with the checkpoint's model on `device`."""

    def __init__(self, checkpoint: str | os.PathLike, *, beam: int = 1, device: str = "auto"):
        self.device = pick_device(device)
        self.model, self.tokenizer, config = load_model(checkpoint, self.device)
        self.frontend = log_mel(config).to(self.device)
        self.waveform = waveform_of(config)
        self.beam = beam
        self.timestamps = False  # (text, words) per piece when true: greedy decoding with each token's frame
        self.frame_seconds = config.subsampling * FRAME_MS / 1000

    @torch.no_grad()
    def __call__(self, pieces: list[np.ndarray]) -> list[str]:
        lens = torch.tensor([p.size for p in pieces], dtype=torch.long)
        padded = torch.zeros(len(pieces), int(lens.max()), dtype=torch.float32)  # (B, S)
        for b, p in enumerate(pieces):
            padded[b, :p.size] = torch.from_numpy(p)
        feats, feat_lens = self.frontend(padded.to(self.device), lens.to(self.device))
        enc, enc_lens = self.model.encode(feats, feat_lens)
        if not self.timestamps:
            return [self.tokenizer.decode(ids) for ids in decode(self.model, enc, enc_lens, beam=self.beam)]
        out = []
        for ids, frames in zip(*greedy_batch_timed(self.model, enc, enc_lens)):
            times = [f * self.frame_seconds for f in frames]
            out.append((self.tokenizer.decode(ids), word_times(self.tokenizer, ids, times, self.frame_seconds)))
        return out


def checkpoint_recogniser(checkpoint: str | os.PathLike, *, beam: int = 1, device: str = "auto",
                          threads: int = 0) -> CheckpointRecogniser:
    """The checkpoint's recogniser (`threads` > 0 sets torch's intra-op threads for this process)."""
    if not os.path.isfile(checkpoint):
        raise UserError(f"{checkpoint}: no such checkpoint (expected a file written by `fastasr train`)")
    if threads > 0:
        torch.set_num_threads(threads)
    return CheckpointRecogniser(checkpoint, beam=beam, device=device)


def iter_transcripts(checkpoint: str | os.PathLike, paths: Iterable[str | os.PathLike], *, beam: int = 1,
                     device: str = "auto", threads: int = 0, batch_seconds: float = 240.0,
                     max_piece_seconds: float = 30.0, on_error: str = "raise",
                     progress: bool = False, timestamps: bool = False) -> Iterator[Transcript]:
    """A Transcript for each file, in the order given; timestamps: each word's times too (Transcript.words, greedy
    decoding).

    on_error="raise": an unreadable file raises UnreadableAudio naming it. on_error="skip": it is yielded as
    Transcript(path, None, why) and the rest goes on.
    """
    if timestamps and beam > 1:
        raise UserError("--timestamps decodes greedily: leave --beam at 1")
    recognise = checkpoint_recogniser(checkpoint, beam=beam, device=device, threads=threads)
    recognise.timestamps = timestamps
    return transcribe_files(paths, recognise, batch_seconds=batch_seconds, max_piece_seconds=max_piece_seconds,
                            on_error=on_error, progress=progress, waveform=recognise.waveform)


def transcribe(checkpoint: str | os.PathLike, paths: Iterable[str | os.PathLike], *, beam: int = 1,
               device: str = "auto", batch_seconds: float = 240.0,
               max_piece_seconds: float = 30.0) -> list[tuple[str, str]]:
    """(path, text) for each file, in the order given; an unreadable file raises UnreadableAudio naming it."""
    return [(t.path, t.text) for t in iter_transcripts(checkpoint, paths, beam=beam, device=device,
                                                        batch_seconds=batch_seconds,
                                                        max_piece_seconds=max_piece_seconds)]
