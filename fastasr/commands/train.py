"""`fastasr train --data OUT --run-dir RUN_DIR --preset P [--tokenizer char|bpe:N|unigram:N|FILE.model]
[--max-steps N | --max-minutes M] [--resume | --auto-resume] [--init-from CKPT] [--config FILE] [--print-config]
[section.field=value…]`

Settings: the preset, then what the run continues (--resume: the run's model, optim and data settings;
--init-from: the checkpoint's model settings), then the --config file, then the overrides (fastasr.training.config);
`--print-config` shows the result, every setting by its override name, without needing --data.

The same command line runs single-process and under `torchrun --nproc_per_node N -m fastasr train …`. The run
directory is spelt `--run-dir` (or `--exp-dir`): torchrun's own parser reads `--run` as an abbreviation of its
`--run-path` and stops with "ambiguous option", so `--run` survives only as a hidden, deprecated alias.
Everything a user can get wrong — the data directory, a setting's name, type or range, a CUDA device that is not
there — is checked before training starts and reported as one line (exit 2).

A run directory is one run: training into one that already holds a run's files (RUN_FILES) needs --resume, so
that two runs never mix their checkpoints and logs; every checkpoint carries the run's id (setup.py), which
`fastasr average` compares.
"""

from __future__ import annotations

import argparse
import sys

from fastasr.commands.args import add_reach_flags, positive_float, positive_int
from fastasr.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    from fastasr.training.config import PRESETS

    p.add_argument("--data", metavar="DIR", help="shard directory (with index.json; required)")
    p.add_argument("--run-dir", "--exp-dir", dest="run_dir", metavar="RUN_DIR",
                   help="run directory: checkpoints, logs, plots (required)")
    p.add_argument("--run", dest="run_deprecated", help=argparse.SUPPRESS)  # the old spelling; torchrun rejects it
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model and schedule size")
    p.add_argument("--tokenizer", default=None, metavar="char|bpe:N|unigram:N|FILE.model",
                   help="output tokens: the alphabet's characters (default; with --resume: the run's), a "
                        "SentencePiece BPE or unigram model of N pieces trained on the train transcripts (saved as "
                        "RUN_DIR/tokenizer.model and in every checkpoint), or that of a SentencePiece FILE.model")
    p.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                   help="stop after N steps (default: no limit)")
    p.add_argument("--max-minutes", type=positive_float, default=None, metavar="M",
                   help="stop after M minutes of training (default: no limit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its last.pt (an error when there is none, unless "
                        "--init-from says where a new run starts)")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue from RUN_DIR/last.pt when there is one, else start a fresh run there (for job "
                        "scripts that are re-submitted)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from this checkpoint's weights (not its optimiser or schedule); the model settings "
                        "default to its own; another vocabulary re-initialises the output layer and the predictor's "
                        "embedding. With --resume, a run that already has last.pt resumes instead")
    p.add_argument("--config", metavar="FILE",
                   help="settings file, JSON or YAML ({section: {field: value}}, like RUN_DIR/config.json): on top "
                        "of the preset, under the section.field=value overrides")
    p.add_argument("--print-config", action="store_true",
                   help="print every setting as section.field=value (the resolved value, and the preset's where "
                        "it differs) and exit")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="e.g. model.d_model=128 optim.lr=1e-3 data.num_workers=2 train.val_every=100. Sections: "
                        "model (sizes, encoder, front end, streaming), optim (lr, warm-up, schedule, accumulation), "
                        "data (batching, workers, filters, augmentation), train (limits, logging, checkpoints, "
                        "device). `--preset P --print-config` lists every setting with its value")
    add_reach_flags(p)


# What `fastasr train` writes into a run directory before or with its first checkpoint: their presence means a run.
RUN_FILES = ("last.pt", "config.json", "train_log.csv", "val_log.csv")


def run_files(run_dir) -> list[str]:
    """The names of a run's files that `run_dir` holds (RUN_FILES and step-*.pt), sorted; [] for a new directory."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name in RUN_FILES or (p.name.startswith("step-") and p.name.endswith(".pt")))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def resume_mode(args: argparse.Namespace, run_dir) -> bool:
    """Whether this invocation resumes the run in `run_dir`. A UserError for a directory that holds a run without
    --resume, for one that holds a run that saved no checkpoint, for --resume with no last.pt (and no --init-from
    to start from instead), and for both flags; --auto-resume with nothing there starts a run, saying so."""
    import os
    from pathlib import Path

    if args.resume and args.auto_resume:
        raise UserError("give --resume (last.pt must exist) or --auto-resume (resume if it exists), not both")
    last, held = Path(run_dir) / "last.pt", run_files(run_dir)
    if last.is_file():
        if args.resume or args.auto_resume:
            return True
        raise UserError(f"--run-dir {run_dir} already holds a run ({_listed(held)}): continue it with --resume, or "
                        "give a fresh --run-dir for a new run")
    if held:  # a run that stopped before its first checkpoint: its logs would mix with the next run's
        raise UserError(f"--run-dir {run_dir} holds a run's files ({_listed(held)}) but no last.pt to continue "
                        "with --resume: remove those files or give a fresh --run-dir")
    if args.resume and args.init_from is None:
        raise UserError(f"--resume: {last} does not exist, so there is no run to resume (start one without "
                        "--resume, or use --auto-resume to resume only when there is one)")
    if args.auto_resume and os.environ.get("RANK", "0") == "0":
        print(f"fastasr train: --auto-resume: nothing to resume ({last} does not exist): starting a fresh run",
              file=sys.stderr)
    return False


def _continued(args: argparse.Namespace, run_dir) -> dict | None:
    """The saved settings a run continues, under the command line's: --resume keeps the run's model, optim and
    data settings (an explicit one that differs is refused when training starts), --init-from the checkpoint's
    model settings."""
    from pathlib import Path

    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    if (args.resume or args.auto_resume) and last is not None and last.is_file():
        from fastasr.training import checkpoints as ckpt_io

        saved = ckpt_io.load(last)["config"]
        return {k: saved[k] for k in ("model", "optim", "data") if k in saved}
    if args.init_from is not None:
        from fastasr.training import checkpoints as ckpt_io

        model = dict(ckpt_io.load(args.init_from)["config"]["model"])
        model.pop("vocab_size", None)  # this run's tokenizer decides it
        return {"model": model}
    return None


def _settings_file(path) -> dict:
    """A --config file's sections. A "tokenizer" entry (RUN_DIR/config.json records the run's) is no setting: the
    tokenizer is the --tokenizer option's, so it is dropped, saying so."""
    from fastasr.training.config import load_file

    file = load_file(path)
    if "tokenizer" in file:
        said = file.pop("tokenizer").get("spec", "?")
        print(f"fastasr train: --config {path}: its tokenizer ({said}) is a record, not a setting; the tokenizer "
              "is --tokenizer's", file=sys.stderr)
    return file


def resolve(args: argparse.Namespace):
    """(data, run_dir, config) from the arguments, every mistake a UserError; nothing heavy is imported unless a
    checkpoint must be read (--resume, --init-from)."""
    from pathlib import Path

    from fastasr.shards.index import Reach, open_index
    from fastasr.training.config import preset

    extra = []
    for flag, name, value in (("--max-steps", "max_steps", args.max_steps),
                              ("--max-minutes", "max_minutes", args.max_minutes)):
        if value is None:
            continue
        extra.append(f"train.{name}={value}")
        said = [o for o in args.overrides if o.split("=", 1)[0].strip() == f"train.{name}"]
        if said:  # one setting asked for twice: which one was meant is not ours to guess
            raise UserError(f"{flag} {value} and {said[-1]} set the same setting: give one of them")
    run_dir = args.run_dir
    if args.run_deprecated is not None:
        if run_dir is not None:
            raise UserError("give the run directory once: --run-dir (--run is its deprecated spelling)")
        print("fastasr train: --run is deprecated (torchrun rejects it as ambiguous): use --run-dir",
              file=sys.stderr)
        run_dir = args.run_deprecated
    if args.init_from is not None and not Path(args.init_from).is_file():
        raise UserError(f"--init-from {args.init_from}: no such checkpoint (a .pt file written by `fastasr train` "
                        "or `fastasr average`)")
    if args.tokenizer is not None:
        from fastasr.text.tokenizer import parse_spec

        parse_spec(args.tokenizer)  # here, on every rank, so that a mistake stops them all at once
    config = preset(args.preset, [*args.overrides, *extra], base=_continued(args, run_dir),
                    file=_settings_file(args.config) if args.config else None)
    if args.print_config:
        return args.data, run_dir, config
    if args.data is None:
        raise UserError("--data DIR is required (a shard directory with index.json)")
    if run_dir is None:
        raise UserError("--run-dir RUN_DIR is required (where checkpoints and logs go)")
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError(f"--run-dir {run_dir} is a file, not a directory")
    _, index = open_index(args.data, "--data", reach=Reach(args.allow_pipe, args.allow_foreign_paths))
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
    if args.print_config:
        from fastasr.training.config import describe

        print("\n".join(describe(config, args.preset)))
        return 0

    resume = resume_mode(args, run_dir)
    import torch.distributed as dist

    from fastasr.training.loop import train

    summary = train(data, run_dir, config, resume=resume, init_from=args.init_from, tokenizer=args.tokenizer,
                    allow_pipe=args.allow_pipe, allow_foreign_paths=args.allow_foreign_paths)
    # Only after success: destroying the group while a failed rank's peers sit in a collective would hang them;
    # on an exception this process exits and torchrun stops the others.
    if dist.is_initialized():
        dist.destroy_process_group()
    if "interrupted" in summary:  # saved, and said so; the shell's code for the signal, which schedulers read
        import signal

        return 128 + int(signal.Signals[summary["interrupted"]])
    return 0
