"""`fastasr index SHARD_URL… --out DIR/index.json`: index WebDataset shards that other tools wrote (thin CLI over
`fastasr.shards.foreign.index_shards`)."""

from __future__ import annotations

import argparse

from fastasr.commands.args import positive_int
from fastasr.corpus.split import SPLITS

EPILOG = """\
SHARD_URL is a local path, file://…, https://…, s3://… (credentials as s3fs reads them), or pipe:CMD (CMD writes
the tar to stdout), with WebDataset's brace patterns: 'shards/shard-{000000..000099}.tar' (quote them).

A sample is a KEY group of members (KEY.flac + KEY.txt, KEY.opus + KEY.json, …): exactly one audio member
(opus, flac, wav, mp3, ogg) and a transcript, from KEY.txt (--transcript txt) or a string field of KEY.json
(--transcript json:text, NeMo's field). Its duration is read from the audio header (a json `duration` is not
trusted; disagreements over 10 ms are counted as warnings). The transcript must normalise under the text options
(as in `fastasr shard`); shards keep it as written and the loader normalises it the same way.

Writes DIR/index.json, DIR/durations-SPLIT.json (a duration per KEY group in tar order, null when unusable) and
DIR/rejected.tsv (every unusable group, PATH#KEY<TAB>reason<TAB>detail). Indexing another --split into the same DIR
adds that split (again: replaces it); the text options and --transcript must match the splits already there.
A shard that cannot be read is reported and left out of the index.

Exit status: 0 when the index was written (unusable samples and unreadable shards included), 2 on bad arguments
(no shards, a missing local shard, a brace pattern of more than 1,000,000 names or with unbalanced braces, a bad
--transcript, settings that contradict DIR/index.json)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("urls", nargs="+", metavar="SHARD_URL", help="shards (paths, URLs, pipe:CMD, {a..b} patterns)")
    parser.add_argument("--out", required=True, metavar="DIR/index.json", help="the index to write (DIR is created)")
    parser.add_argument("--split", choices=SPLITS, default="train", help="the split these shards are")
    parser.add_argument("--transcript", metavar="txt|json:FIELD", default="txt",
                        help="where a sample's transcript is: its .txt member or a field of its .json")
    parser.add_argument("--workers", metavar="N", type=positive_int, default=None,
                        help="shards read at once, by as many processes (default: all cores)")
    parser.add_argument("--keep-digits", action="store_true",
                        help="keep digits in transcripts (adds them to the alphabet)")
    parser.add_argument("--keep-latin", action="store_true", help="keep Latin letters (adds a-z to the alphabet)")
    parser.add_argument("--no-fold-yo", "--keep-yo", dest="no_fold_yo", action="store_true",
                        help="keep ё as its own letter instead of folding it to е")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    from fastasr.shards.foreign import format_summary, index_shards
    from fastasr.text.normalization import TextConfig

    result = index_shards(
        args.urls, args.out, split=args.split, transcript=args.transcript, workers=args.workers,
        text=TextConfig(fold_yo=not args.no_fold_yo, keep_digits=args.keep_digits, keep_latin=args.keep_latin),
        progress=not args.quiet,
    )
    if not args.quiet:
        print(format_summary(result))
        print(f"wrote {result.index_path}")
    return 0
