"""`fastasr train --data OUT --run-dir RUN_DIR --preset P [--max-steps N | --max-minutes M] [--resume]
[section.field=value…]`

The same command line runs single-process and under `torchrun --nproc_per_node N -m fastasr train …`. The run
directory is spelt `--run-dir` (or `--exp-dir`): torchrun's own parser reads `--run` as an abbreviation of its
`--run-path` and stops with "ambiguous option", so `--run` survives only as a hidden, deprecated alias.
Everything a user can get wrong — the data directory, a setting's name, type or range, a CUDA device that is not
there — is checked before training starts and reported as one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from fastasr.commands.args import positive_float, positive_int
from fastasr.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    from fastasr.config import PRESETS

    p.add_argument("--data", required=True, metavar="DIR", help="shard directory (with index.json)")
    p.add_argument("--run-dir", "--exp-dir", dest="run_dir", metavar="RUN_DIR",
                   help="run directory: checkpoints, logs, plots (required)")
    p.add_argument("--run", dest="run_deprecated", help=argparse.SUPPRESS)  # the old spelling; torchrun rejects it
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model and schedule size")
    p.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                   help="stop after N steps (default: no limit)")
    p.add_argument("--max-minutes", type=positive_float, default=None, metavar="M",
                   help="stop after M minutes of training (default: no limit)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if it exists")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="e.g. model.d_model=128 optim.lr=1e-3 data.num_workers=2 train.val_every=100 "
                        "(sections: model, optim, data, train; see fastasr/config.py)")


def resolve(args: argparse.Namespace):
    """(data, run_dir, config) from the arguments, every mistake a UserError; nothing heavy is imported."""
    from pathlib import Path

    from fastasr.config import preset
    from fastasr.shard_index import open_index

    run_dir = args.run_dir
    if args.run_deprecated is not None:
        if run_dir is not None:
            raise UserError("give the run directory once: --run-dir (--run is its deprecated spelling)")
        print("fastasr train: --run is deprecated (torchrun rejects it as ambiguous): use --run-dir",
              file=sys.stderr)
        run_dir = args.run_deprecated
    if run_dir is None:
        raise UserError("--run-dir RUN_DIR is required (where checkpoints and logs go)")
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError(f"--run-dir {run_dir} is a file, not a directory")
    extra = []
    if args.max_steps is not None:
        extra.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        extra.append(f"train.max_minutes={args.max_minutes}")
    config = preset(args.preset, [*args.overrides, *extra])
    _, index = open_index(args.data, "--data")
    train_split = index.get("splits", {}).get("train", {})
    if not train_split.get("samples"):
        raise UserError(f"--data {args.data}: its train split has no samples (was it built with --split 0,0,1?)")
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("train.device=cuda: torch sees no CUDA device here (use train.device=auto or cpu)")
    return args.data, run_dir, config


def run(args: argparse.Namespace) -> int:
    data, run_dir, config = resolve(args)

    import torch.distributed as dist

    from fastasr.train import train

    train(data, run_dir, config, resume=args.resume)
    # Only after success: destroying the group while a failed rank's peers sit in a collective would hang them;
    # on an exception this process exits and torchrun stops the others.
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
