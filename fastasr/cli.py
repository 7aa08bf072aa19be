"""The `fastasr` command: a thin dispatcher over `fastasr.commands.*`.

Each command module defines `configure(parser)` and `run(args) -> int`, calling one library function that tests
call too. Here, for every command alike: `--version`, `--debug` and `--log-level` (before or after COMMAND), every
option's default in `--help`, the `fastasr` logger on stderr (the loader's per-epoch summary, the shard builder's
warnings), and the one kind of user error (`fastasr.errors.UserError`, argparse's mistakes included) turned into
one stderr line and exit status 2 — with the traceback too under `--debug`. A misspelt COMMAND, option or choice
names the closest one ("did you mean train?").
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from fastasr import __version__
from fastasr.errors import UserError, did_you_mean

COMMANDS = {
    "shard": ("fastasr.commands.shard", "pack a corpus into WebDataset tar shards"),
    "index": ("fastasr.commands.index", "an index.json for WebDataset shards that other tools wrote"),
    "stats": ("fastasr.commands.stats", "counts, hours, percentiles and plots of a shard directory"),
    "train": ("fastasr.commands.train", "train an RNN-T model (single process or under torchrun)"),
    "eval": ("fastasr.commands.eval", "WER / CER / accuracy of a checkpoint on a split"),
    "transcribe": ("fastasr.commands.transcribe", "transcribe audio files with a checkpoint or an export"),
    "export": ("fastasr.commands.export", "ONNX graphs + tokenizer + front-end settings for fastasr.runtime"),
    "average": ("fastasr.commands.average", "parameter-wise mean of a run's last N step checkpoints"),
    "convert-checkpoint": ("fastasr.commands.convert_checkpoint",
                           "rewrite an older checkpoint you trust so that fastasr loads it as data only"),
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Parser(argparse.ArgumentParser):
    """An argument mistake raises UserError (one line in `main`), instead of printing the usage and exiting."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")

    def _check_value(self, action: argparse.Action, value) -> None:
        """An invalid choice (a COMMAND, --log-level, --verify, …) names the closest one."""
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{did_you_mean(str(value), choices)}; "
                                                 f"choose from {', '.join(choices)}")

    def parse_args(self, args=None, namespace=None):
        """argparse's, except that an unknown option names the closest one the command has."""
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(args)
            options = self._option_names() + (command._option_names() if command is not None else [])
            hints = "".join(_closest_option(x, options) for x in extras if x.startswith("-"))
            (command or self).error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return args

    def _command_parser(self, args: argparse.Namespace) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(args, action.dest, None))
        return None

    def _option_names(self) -> list[str]:
        return [o for a in self._actions if a.help != argparse.SUPPRESS for o in a.option_strings]


def _closest_option(word: str, options: list[str]) -> str:
    name = word.split("=", 1)[0]
    if name.replace("_", "-") in options:  # --run_dir: the spelling of Python, not of the command line
        return f" (did you mean {name.replace('_', '-')}?)"
    return did_you_mean(name, options)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, unless the help already gives it or there is none to give."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or default == [] or "default" in text
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction))):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def common_options(with_defaults: bool) -> argparse.ArgumentParser:
    """--debug / --log-level, on the top parser (with defaults) and on every command (without: a value given
    before COMMAND is not overwritten by the command's default)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=False if with_defaults else argparse.SUPPRESS,
                   help="show the traceback of an error, besides its one-line message")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                   default="INFO" if with_defaults else argparse.SUPPRESS,
                   help="messages of the fastasr logger shown on stderr from this level up (default: INFO)")
    return p


class _Stderr(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (tests and progress bars swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    logger = logging.getLogger("fastasr")
    logger.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


def build_parser(argv: list[str]) -> Parser:
    parser = Parser(prog="fastasr", description="Fast RNN-T training for Russian speech.",
                    formatter_class=HelpFormatter, parents=[common_options(True)])
    parser.add_argument("--version", action="version", version=f"fastasr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                           parents=[common_options(False)])
        p.set_defaults(_module=module)
        # Parsers are built lazily only for the command asked for, so `fastasr shard` never imports torch.
        if name == wanted:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except UserError as err:
        return _report(err, next((a for a in argv if a in COMMANDS), None))
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    configure_logging(args.log_level)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BrokenPipeError:  # `fastasr … | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one anywhere else: stop without a traceback
        if args.debug:
            traceback.print_exc()
        print(f"fastasr {args.command}: interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        return _report(err, args.command)


def _report(err: UserError, command: str | None) -> int:
    prog = f"fastasr {command}" if command else "fastasr"
    print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
