"""`fastasr train --data OUT --run RUN --preset P [--max-steps N | --max-minutes M] [--resume] [section.field=value…]`

The same command runs single-process and under `torchrun --nproc_per_node N -m fastasr train …` (there spell
`--run` as `--run-dir`: torchrun's argument parser takes `--run` for an abbreviation of its own `--run-path`).
"""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    from fastasr.config import PRESETS

    p.add_argument("--data", required=True, help="shard directory (with index.json)")
    # --run-dir is the spelling to use under torchrun, whose own parser rejects `--run` as an ambiguous
    # abbreviation of its --run-path even after `-m fastasr`.
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory: checkpoints, logs, plots")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt if it exists")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="e.g. model.d_model=128 optim.lr=1e-3 data.num_workers=2 train.val_every=100")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from fastasr.config import preset
    from fastasr.train import train

    extra = {}
    if args.max_steps is not None:
        extra["max_steps"] = args.max_steps
    if args.max_minutes is not None:
        extra["max_minutes"] = args.max_minutes
    config = preset(args.preset, [*args.overrides, *(f"train.{k}={v}" for k, v in extra.items())])
    train(args.data, args.run, config, resume=args.resume)
    # Only after success: destroying the group while a failed rank's peers sit in a collective would hang them;
    # on an exception this process exits and torchrun stops the others.
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
