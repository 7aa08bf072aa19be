"""The `fastasr` command: a thin dispatcher over `fastasr.commands.*`.

Each command module defines `configure(parser)` and `run(args) -> int`, calling one library function that tests
call too.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "shard": ("fastasr.commands.shard", "pack a corpus into WebDataset tar shards"),
    "stats": ("fastasr.commands.stats", "counts, hours, percentiles and plots of a shard directory"),
    "train": ("fastasr.commands.train", "train an RNN-T model (single process or under torchrun)"),
    "eval": ("fastasr.commands.eval", "WER / CER / accuracy of a checkpoint on a split"),
    "transcribe": ("fastasr.commands.transcribe", "transcribe audio files with a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fastasr", description="Fast RNN-T training for Russian speech.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Parsers are built lazily only for the command asked for, so `fastasr shard` never imports torch.
        if argv[:1] == [name]:
            importlib.import_module(module).configure(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
