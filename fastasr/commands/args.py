"""Argument types shared by the commands: numbers checked at parse time, so `--max-steps -5` is refused up front
with a message naming the option (argparse prefixes it: `argument --max-steps: wants an integer >= 1, got '-5'`)."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type, minimum: float, strict: bool):
    what = "an integer" if kind is int else "a number"
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants {what} {bound}, got {text!r}") from None
    if not (value > minimum if strict else value >= minimum) or (kind is float and math.isnan(value)):
        raise argparse.ArgumentTypeError(f"wants {what} {bound}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, strict=False)


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, strict=False)


def positive_float(text: str) -> float:
    return _number(text, float, 0, strict=True)


def non_negative_float(text: str) -> float:
    return _number(text, float, 0, strict=False)


def add_reach_flags(p: argparse.ArgumentParser) -> None:
    """The opt-ins for an index read from a URL (fastasr.shards.index.Reach); a local index needs neither."""
    p.add_argument("--allow-pipe", action="store_true",
                   help="run the pipe:CMD shard sources that an index read from a URL names (an index in a local "
                        "directory may always name them)")
    p.add_argument("--allow-foreign-paths", action="store_true",
                   help="follow shard paths of an index read from a URL that lead outside its URL prefix: local "
                        "paths, file://, other hosts, buckets or schemes, '..'")


def check_checkpoint_path(path: str) -> None:
    """--checkpoint PATH: a UserError saying what was probably meant when PATH is a run or export directory, or
    missing."""
    import os

    from fastasr.errors import UserError

    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.json")):
            raise UserError(f"--checkpoint {path}: is an export directory; did you mean --model {path}?")
        there = [n for n in ("last.pt", "ema.pt") if os.path.isfile(os.path.join(path, n))]
        hint = " or ".join(os.path.join(path, n) for n in there) or os.path.join(path, "last.pt")
        raise UserError(f"--checkpoint {path}: is a directory; did you mean {hint}?")
    if not os.path.isfile(path):
        raise UserError(f"--checkpoint {path} does not exist (a .pt file written by `fastasr train`)")
