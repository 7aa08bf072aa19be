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
from fastasr.model.decode import decode
from fastasr.model.transducer import log_mel

__all__ = ["iter_transcripts", "transcribe", "checkpoint_recogniser", "Transcript", "UnreadableAudio",
           "read_audio", "read_mono", "split_long"]


def checkpoint_recogniser(checkpoint: str | os.PathLike, *, beam: int = 1, device: str = "auto", threads: int = 0):
    """`recognise(pieces) -> texts` for normalised 16-kHz pieces, with the checkpoint's model on `device`
    (`threads` > 0 sets torch's intra-op threads for this process)."""
    if not os.path.isfile(checkpoint):
        raise UserError(f"{checkpoint}: no such checkpoint (expected a file written by `fastasr train`)")
    if threads > 0:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    model, tokenizer, config = load_model(checkpoint, dev)
    frontend = log_mel(config).to(dev)

    @torch.no_grad()
    def recognise(pieces: list[np.ndarray]) -> list[str]:
        lens = torch.tensor([p.size for p in pieces], dtype=torch.long)
        padded = torch.zeros(len(pieces), int(lens.max()), dtype=torch.float32)  # (B, S)
        for b, p in enumerate(pieces):
            padded[b, :p.size] = torch.from_numpy(p)
        feats, feat_lens = frontend(padded.to(dev), lens.to(dev))
        enc, enc_lens = model.encode(feats, feat_lens)
        return [tokenizer.decode(ids) for ids in decode(model, enc, enc_lens, beam=beam)]

    return recognise


def iter_transcripts(checkpoint: str | os.PathLike, paths: Iterable[str | os.PathLike], *, beam: int = 1,
                     device: str = "auto", threads: int = 0, batch_seconds: float = 240.0,
                     max_piece_seconds: float = 30.0, on_error: str = "raise",
                     progress: bool = False) -> Iterator[Transcript]:
    """A Transcript for each file, in the order given.

    on_error="raise": an unreadable file raises UnreadableAudio naming it. on_error="skip": it is yielded as
    Transcript(path, None, why) and the rest goes on.
    """
    recognise = checkpoint_recogniser(checkpoint, beam=beam, device=device, threads=threads)
    return transcribe_files(paths, recognise, batch_seconds=batch_seconds, max_piece_seconds=max_piece_seconds,
                            on_error=on_error, progress=progress)


def transcribe(checkpoint: str | os.PathLike, paths: Iterable[str | os.PathLike], *, beam: int = 1,
               device: str = "auto", batch_seconds: float = 240.0,
               max_piece_seconds: float = 30.0) -> list[tuple[str, str]]:
    """(path, text) for each file, in the order given; an unreadable file raises UnreadableAudio naming it."""
    return [(t.path, t.text) for t in iter_transcripts(checkpoint, paths, beam=beam, device=device,
                                                        batch_seconds=batch_seconds,
                                                        max_piece_seconds=max_piece_seconds)]
