"""`fastasr average RUN_DIR --last N --out FILE`: the parameter-wise mean of a run's newest N step checkpoints
(icefall's --avg), written as a checkpoint that eval, transcribe, export and `train --init-from` read. Checkpoints
of two runs (their run ids differ) are refused; older ones without a run id are averaged, saying so."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fastasr.commands.args import positive_int
from fastasr.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `fastasr train` (its step-*.pt)")
    p.add_argument("--last", type=positive_int, required=True, metavar="N",
                   help="average the newest N step checkpoints (at most train.keep of the run)")
    p.add_argument("--out", required=True, metavar="FILE", help="where the averaged checkpoint goes (.pt)")


def run(args: argparse.Namespace) -> int:
    from fastasr.training import checkpoints as ckpt_io

    out = Path(args.out)
    if args.out.endswith(("/", os.sep)) or out.is_dir():
        raise UserError(f"--out {args.out} is a directory; give a file name such as {out / 'averaged.pt'}")
    averaged = ckpt_io.average(args.run_dir, args.last)
    ckpt_io.save_atomic(averaged, out)
    steps = ", ".join(str(step) for step in averaged["averaged_steps"])
    unchecked = averaged.get("averaged_unchecked", [])
    said = (f"; {', '.join(unchecked)} {'carries' if len(unchecked) == 1 else 'carry'} no run id (older than run "
            "ids), so whether all are of one run could not be checked" if unchecked else "; all of one run")
    print(f"{out}: mean of steps {steps} ({', '.join(averaged['averaged_from'])}){said}")
    return 0
