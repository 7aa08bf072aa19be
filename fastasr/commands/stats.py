"""`fastasr stats PATH`: counts, hours, percentiles, rejects and plots of a shard directory."""

from __future__ import annotations

import argparse
import json
import sys

from fastasr.commands.args import add_reach_flags


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="shard directory (with index.json) or its index.json")
    parser.add_argument("--plots", metavar="DIR", help="write duration_vs_words.png and duration_hist.png here")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON ('-' for stdout)")
    parser.add_argument("--durations-only", action="store_true",
                        help="counts, hours and duration percentiles from index.json and the durations tables "
                             "alone: no shard is opened (seconds at Open STT scale); no words, speaking rates or "
                             "groups")
    add_reach_flags(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 0; 1 when a shard listed in the index cannot be read. A PATH that is not a shard directory is a user
    error (exit 2, from cli.main)."""
    import tarfile

    from fastasr.shards.stats import compute_stats, format_table

    try:
        summary = compute_stats(args.path, args.plots, allow_pipe=args.allow_pipe,
                                allow_foreign_paths=args.allow_foreign_paths, durations_only=args.durations_only)
    except (OSError, tarfile.TarError, KeyError, ValueError) as err:
        print(f"fastasr stats: error: {err}", file=sys.stderr)
        return 1
    if args.json == "-":
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        return 0
    print(format_table(summary))
    for p in summary.get("plots", []):
        print(f"wrote {p}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, ensure_ascii=False, indent=1)
    return 0
