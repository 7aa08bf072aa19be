"""`fastasr convert-checkpoint OLD.pt NEW.pt`: a checkpoint of an older fastasr, which stored Python objects that
fastasr no longer loads (NumPy RNG state), rewritten once as one of tensors and plain values that every command
reads with torch's weights-only load. OLD is read with that unpickler too, NumPy's arrays and scalars allowed besides:
any other object is refused, so no code runs."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", metavar="OLD.pt",
                   help="the checkpoint to convert. ONLY FOR FILES YOU TRUST as models: it is read with torch's "
                        "weights-only unpickler with NumPy's arrays and scalars allowed (what an older fastasr "
                        "stored); any other object is refused, so no code runs")
    p.add_argument("new", metavar="NEW.pt", help="where the converted copy goes (a new file; OLD.pt stays)")


def run(args: argparse.Namespace) -> int:
    from fastasr.training.checkpoints import convert_file

    converted = convert_file(args.old, args.new)
    print(f"{args.new}: {args.old} converted (step {converted.get('step', '?')}); fastasr reads it as data only")
    return 0
