"""`fastasr transcribe --checkpoint CKPT AUDIO…`: one `path<TAB>text` line per file."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `fastasr train` (e.g. RUN/last.pt)")
    p.add_argument("audio", nargs="+", help="audio files: opus, wav or flac, any rate and channel count")
    p.add_argument("--beam", type=int, default=1, help="beam width; 1 = batched greedy decoding")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")


def run(args: argparse.Namespace) -> int:
    from fastasr.transcribe import transcribe

    for path, text in transcribe(args.checkpoint, args.audio, beam=args.beam, device=args.device):
        print(f"{path}\t{text}", flush=True)
    return 0
