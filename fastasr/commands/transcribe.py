"""`fastasr transcribe --checkpoint CKPT AUDIO…`: one `path<TAB>text` line per file, printed as they are done."""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `fastasr train` (e.g. RUN/last.pt)")
    p.add_argument("audio", nargs="+", help="audio files: opus, wav or flac, any rate, channel count and length")
    p.add_argument("--beam", type=int, default=1, help="beam width; 1 = batched greedy decoding")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-seconds", type=float, default=240.0,
                   help="padded seconds of audio per batch (pieces are sorted by length before batching)")
    p.add_argument("--max-piece-seconds", type=float, default=30.0,
                   help="longer recordings are cut at quiet points into pieces of at most this length")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every file was transcribed; 1 when some could not be read (each is named on stderr)."""
    from tqdm import tqdm

    from fastasr.transcribe import iter_transcripts

    failed = 0
    for t in iter_transcripts(args.checkpoint, args.audio, beam=args.beam, device=args.device,
                              batch_seconds=args.batch_seconds, max_piece_seconds=args.max_piece_seconds,
                              on_error="skip", progress=sys.stderr.isatty()):
        if t.text is None:
            failed += 1
            tqdm.write(f"fastasr transcribe: skipped {t.error}", file=sys.stderr)
            continue
        tqdm.write(f"{t.path}\t{t.text}", file=sys.stdout)  # above the progress bar, when there is one
        sys.stdout.flush()
    if failed:
        print(f"fastasr transcribe: {failed} of {len(args.audio)} files could not be read (named above)",
              file=sys.stderr)
        return 1
    return 0
