"""`fastasr shard SOURCE OUT`: pack a corpus into WebDataset shards (thin CLI over `fastasr.shards.writer.build_shards`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fastasr.commands.args import non_negative_float, positive_int
from fastasr.corpus.checks import Filters
from fastasr.corpus.grouping import GROUP_RULES
from fastasr.corpus.verify import VERIFY_MODES
from fastasr.errors import UserError

EPILOG = """\
SOURCE is one of
  a corpus directory       every *.opus/*.wav/*.flac with a .txt of the same stem
  a Kaldi data dir         wav.scp + text (+ segments, utt2spk)
  an Open STT .csv         headerless audio_path,text_path,duration
  a NeMo .jsonl            audio_filepath, text (+ offset/duration: a segment; speaker)
  a Lhotse .jsonl[.gz]     cuts, or supervisions with the recordings beside them (or the other way round)
Relative paths are relative to the manifest's folder, or to --audio-root DIR; with --manifest PATH, SOURCE is that
root instead. Segments
(offset/duration, Lhotse supervisions, Kaldi segments) become samples of their own: the span's audio, stored
losslessly as FLAC (integer PCM) or float WAV (lossy and float sources).

Every input row ends in exactly one shard or in OUT/rejected.tsv with a reason; OUT/index.json lists shards, counts
and rejects. A rerun with the same inputs and options skips complete shards and gives the same dataset, also after
the previous run was killed. OUT must be new, empty or a fastasr build: another folder is refused unless --force,
and even then only the build's own names are written (SPLIT/shard-NNNNNN.tar, index.json, rejected.tsv,
durations-SPLIT.json, parts/, .meta/); a shard of an earlier plan is deleted only when its .meta sidecar says
fastasr wrote it.

--group-by keeps rows that belong together in one split: dir (the audio file's folder), speaker (utt2spk, Lhotse /
NeMo speaker), recording (the audio file: all segments of one recording), text (the normalised transcript: every
recording of one sentence), or a regular expression searched in the source path (its first group names the group).

Several machines: run `fastasr shard SOURCE OUT --part I/N` for I = 1..N (parts are numbered from 1) on a shared OUT.
Each part lists the whole corpus, computes the same shard plan and writes every N-th shard. Part I writes
OUT/parts/index-I-of-N.json and OUT/parts/rejected-I-of-N.tsv; the part that finishes last finds all N and combines
them into OUT/index.json and OUT/rejected.tsv. `fastasr shard --merge OUT` combines them by hand (e.g. when parts
ran with separate copies of OUT that were gathered afterwards).

Exit status: 0 when the dataset was built (rejected rows included), 1 when it could not be or every row was
rejected, 2 on bad arguments."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    d = Filters()
    parser.add_argument("source", nargs="?", help="corpus directory, Kaldi data dir or manifest file")
    parser.add_argument("out", nargs="?", help="output shard directory")
    parser.add_argument("--manifest", metavar="PATH", help="a manifest (.csv, .jsonl[.gz], Kaldi data dir) whose paths are relative "
                                           "to SOURCE")
    parser.add_argument("--audio-root", metavar="DIR",
                        help="SOURCE is a manifest whose relative audio paths are relative to DIR (the same as "
                             "`shard DIR OUT --manifest SOURCE`); keys of absolute paths under DIR are relative to it")
    parser.add_argument("--split", default="0.6,0.2,0.2", metavar="TRAIN,VAL,TEST", help="train,val,test fractions")
    parser.add_argument("--group-by", metavar="RULE", help=f"{'|'.join(GROUP_RULES)}|REGEX: hash the split over "
                                                            f"groups, so a group is wholly in one split")
    parser.add_argument("--seed", metavar="N", type=int, default=17, help="salt of the split hash")
    parser.add_argument("--shard-size", metavar="N", type=positive_int, default=1000, help="input rows per shard")
    parser.add_argument("--workers", metavar="N", type=positive_int, default=None, help="writer processes (default: all cores)")
    parser.add_argument("--part", metavar="I/N", help="build part I of N (I/N, 1-based) of the dataset; see below")
    parser.add_argument("--merge", metavar="OUT", help="only combine OUT's finished --part indexes into index.json")
    parser.add_argument("--min-duration", metavar="S", type=non_negative_float, default=d.min_duration, help="seconds")
    parser.add_argument("--max-duration", metavar="S", type=non_negative_float, default=d.max_duration, help="seconds")
    parser.add_argument("--min-cps", metavar="CPS", type=non_negative_float, default=d.min_cps,
                        help="least characters (spaces excluded) per second")
    parser.add_argument("--max-cps", metavar="CPS", type=non_negative_float, default=d.max_cps, help="most characters per second")
    parser.add_argument("--verify", choices=VERIFY_MODES, default=d.verify,
                        help="full: decode every file; header: container checks only, no decode")
    parser.add_argument("--keep-digits", action="store_true",
                        help="keep digits in transcripts (adds them to the alphabet)")
    parser.add_argument("--keep-latin", action="store_true", help="keep Latin letters (adds a-z to the alphabet)")
    parser.add_argument("--no-fold-yo", action="store_true",
                        help="keep ё as its own letter instead of folding it to е")
    parser.add_argument("--force", action="store_true",
                        help="build into an OUT that is not empty and not a fastasr build (see below)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary, no INFO log lines (warnings and errors only)")


def run(args: argparse.Namespace) -> int:
    from fastasr.corpus.grouping import parse_group_by
    from fastasr.corpus.split import parse_fractions, parse_part
    from fastasr.shards.index import merge_parts
    from fastasr.shards.writer import ShardOptions, build_shards, format_summary
    from fastasr.text.normalization import TextConfig

    if args.merge:
        if args.source or args.out:
            raise UserError("--merge OUT takes no SOURCE/OUT positionals")
        try:
            path = merge_parts(args.merge)
        except (OSError, ValueError, RuntimeError) as err:
            return _fail(f"cannot merge: {err}")
        print(f"wrote {path}")
        return 0
    if not args.source or not args.out:
        raise UserError("SOURCE and OUT are required (or --merge OUT)")
    if args.audio_root is not None:
        if args.manifest is not None:
            raise UserError("give --audio-root DIR (SOURCE is the manifest) or --manifest PATH (SOURCE is the audio "
                            "root), not both")
        if not Path(args.audio_root).is_dir():
            raise UserError(f"--audio-root {args.audio_root}: not a directory")
        args.source, args.manifest = args.audio_root, args.source
    parse_group_by(args.group_by)  # a bad pattern is refused before anything is listed
    options = ShardOptions(
        text=TextConfig(fold_yo=not args.no_fold_yo, keep_digits=args.keep_digits, keep_latin=args.keep_latin),
        filters=Filters(args.min_duration, args.max_duration, args.min_cps, args.max_cps, args.verify),
        split_fractions=parse_fractions(args.split),
        seed=args.seed,
        shard_size=args.shard_size,
        group_by=args.group_by,
    )
    part = parse_part(args.part)
    logger = logging.getLogger("fastasr")
    level = logger.level
    if args.quiet:  # warnings and errors only: no progress bar, no summary, no INFO lines
        logger.setLevel(max(level, logging.WARNING))
    try:
        result = build_shards(args.source, args.out, options, manifest=args.manifest, workers=args.workers,
                              part=part, progress=not args.quiet, force=args.force)
    except (OSError, ValueError, RuntimeError) as err:  # the build itself failed (disk, permissions, …)
        return _fail(str(err))
    finally:
        logger.setLevel(level)
    if not args.quiet:
        print(format_summary(result))
        if result.index_path is None:
            print(f"part {part[0]}/{part[1]} done; index.json is written when all {part[1]} parts have finished")
        else:
            print(f"wrote {result.index_path}")
    if result.index_path is not None:
        return _check_not_empty(result.index_path)
    return 0


def _check_not_empty(index_path: Path) -> int:
    """A complete dataset without a single sample is a failed build: say why its rows were rejected."""
    from fastasr.shards.index import read_rejected_tsv

    index = json.loads(index_path.read_text(encoding="utf-8"))
    totals = index["totals"]
    if totals["samples"] or not totals["input_rows"]:
        return 0
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(index["rejected"].items(), key=lambda kv: -kv[1]))
    tsv = index_path.parent / "rejected.tsv"
    first = next(iter(read_rejected_tsv(tsv)), None) if tsv.exists() else None
    example = f"\n  e.g. {first[0]}: {first[1]}{': ' + first[2] if first[2] else ''}" if first else ""
    return _fail(f"all {totals['input_rows']} input rows were rejected ({reasons}); every row and its reason is in "
                 f"{tsv}{example}")


def _fail(message: str) -> int:
    print(f"fastasr shard: error: {message}", file=sys.stderr)
    return 1
