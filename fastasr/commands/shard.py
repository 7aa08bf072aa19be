"""`fastasr shard SOURCE OUT`: pack a corpus into WebDataset shards (thin CLI over `fastasr.shard.build_shards`)."""

from __future__ import annotations

import argparse
import sys

from fastasr.audio_check import VERIFY_MODES
from fastasr.row_check import Filters

EPILOG = """\
SOURCE is a corpus directory (every *.opus/*.wav/*.flac with a .txt of the same stem), or a .csv / .jsonl manifest
(paths relative to its folder); with --manifest PATH, SOURCE is the root the manifest's paths are relative to.
CSV manifests are Open STT's headerless audio_path,text_path,duration; JSONL is NeMo's audio_filepath,text,duration.

Every input row ends in exactly one shard or in OUT/rejected.tsv with a reason; OUT/index.json lists shards, counts
and rejects. A rerun with the same inputs and options skips complete shards and gives the same dataset, also after
the previous run was killed.

Several machines: run `fastasr shard SOURCE OUT --part I/N` for I = 1..N (parts are numbered from 1) on a shared OUT.
Each part lists the whole corpus, computes the same shard plan and writes every N-th shard. Part I writes
OUT/parts/index-I-of-N.json and OUT/parts/rejected-I-of-N.tsv; the part that finishes last finds all N and combines
them into OUT/index.json and OUT/rejected.tsv. `fastasr shard --merge OUT` combines them by hand (e.g. when parts
ran with separate copies of OUT that were gathered afterwards).

Exit status: 0 when the dataset was built (rejected rows included), 1 when it could not be, 2 on bad arguments."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    d = Filters()
    parser.add_argument("source", nargs="?", help="corpus directory or manifest file")
    parser.add_argument("out", nargs="?", help="output shard directory")
    parser.add_argument("--manifest", help="a .csv or .jsonl manifest whose paths are relative to SOURCE")
    parser.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions (default 0.6,0.2,0.2)")
    parser.add_argument("--seed", type=int, default=17, help="salt of the split hash (default 17)")
    parser.add_argument("--shard-size", type=int, default=1000, help="input rows per shard (default 1000)")
    parser.add_argument("--workers", type=int, default=None, help="writer processes (default: all cores)")
    parser.add_argument("--part", help="build part I of N (I/N, 1-based) of the dataset; see below")
    parser.add_argument("--merge", metavar="OUT", help="only combine OUT's finished --part indexes into index.json")
    parser.add_argument("--min-duration", type=float, default=d.min_duration,
                        help=f"seconds (default {d.min_duration})")
    parser.add_argument("--max-duration", type=float, default=d.max_duration,
                        help=f"seconds (default {d.max_duration})")
    parser.add_argument("--min-cps", type=float, default=d.min_cps,
                        help=f"least characters (spaces excluded) per second (default {d.min_cps})")
    parser.add_argument("--max-cps", type=float, default=d.max_cps,
                        help=f"most characters per second (default {d.max_cps})")
    parser.add_argument("--verify", choices=VERIFY_MODES, default=d.verify,
                        help="full: decode every file (default); header: container checks only, no decode")
    parser.add_argument("--keep-digits", action="store_true",
                        help="keep digits in transcripts (adds them to the alphabet)")
    parser.add_argument("--keep-latin", action="store_true", help="keep Latin letters (adds a-z to the alphabet)")
    parser.add_argument("--no-fold-yo", action="store_true",
                        help="keep ё as its own letter instead of folding it to е")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    from fastasr.shard import ShardOptions, build_shards, format_summary
    from fastasr.shard_index import merge_parts
    from fastasr.split import parse_fractions, parse_part
    from fastasr.text import TextConfig

    if args.merge:
        if args.source or args.out:
            return _fail("--merge OUT takes no SOURCE/OUT positionals", 2)
        try:
            path = merge_parts(args.merge)
        except (OSError, ValueError, RuntimeError) as err:
            return _fail(f"cannot merge: {err}")
        print(f"wrote {path}")
        return 0
    if not args.source or not args.out:
        return _fail("SOURCE and OUT are required (or --merge OUT)", 2)
    try:
        fractions = parse_fractions(args.split)
        part = parse_part(args.part)
        if args.shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
    except ValueError as err:
        return _fail(str(err), 2)
    options = ShardOptions(
        text=TextConfig(fold_yo=not args.no_fold_yo, keep_digits=args.keep_digits, keep_latin=args.keep_latin),
        filters=Filters(args.min_duration, args.max_duration, args.min_cps, args.max_cps, args.verify),
        split_fractions=fractions,
        seed=args.seed,
        shard_size=args.shard_size,
    )
    try:
        result = build_shards(args.source, args.out, options, manifest=args.manifest, workers=args.workers,
                              part=part, progress=not args.quiet)
    except (OSError, ValueError, RuntimeError) as err:
        return _fail(str(err))
    if not args.quiet:
        print(format_summary(result))
        if result.index_path is None:
            print(f"part {part[0]}/{part[1]} done; index.json is written when all {part[1]} parts have finished")
        else:
            print(f"wrote {result.index_path}")
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"fastasr shard: error: {message}", file=sys.stderr)
    return code
