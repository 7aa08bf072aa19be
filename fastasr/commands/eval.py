"""`fastasr eval --checkpoint CKPT --data OUT [--split test] [--out DIR]`: WER / CER / word accuracy."""

from __future__ import annotations

import argparse
import sys

from fastasr.commands.args import (add_reach_flags, check_checkpoint_path, non_negative_int, positive_float,
                                  positive_int)
from fastasr.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by `fastasr train` (e.g. RUN_DIR/last.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="shard directory (with index.json)")
    p.add_argument("--split", default="test", help="which split of the index to score")
    p.add_argument("--out", default=None, metavar="DIR", help="directory for metrics.json and utterances.tsv (default: none)")
    p.add_argument("--beam", type=positive_int, default=1, metavar="K", help="beam width; 1 = batched greedy decoding")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--max-batch-seconds", type=positive_float, default=200.0, metavar="S", help="padded seconds per batch")
    p.add_argument("--workers", type=non_negative_int, default=1, metavar="N", help="loader worker processes")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="score only the first N utterances")
    p.add_argument("--chunk-ms", type=positive_float, default=None, metavar="MS",
                   help="a streaming model (model.streaming=true) in simulated streaming: attention chunks of MS "
                        "milliseconds (a multiple of its encoder frame, 10 ms x subsampling) with its left context; "
                        "the text its cached chunk-by-chunk encoder gives. Default: full context")
    add_reach_flags(p)


def check(args: argparse.Namespace) -> None:
    """Every argument mistake as a UserError, before a model is loaded."""
    from fastasr.shards.index import Reach, open_index

    check_checkpoint_path(args.checkpoint)
    _, index = open_index(args.data, "--data", reach=Reach(args.allow_pipe, args.allow_foreign_paths))
    splits = sorted(index.get("splits", {}))
    if args.split not in splits:
        raise UserError(f"--split {args.split!r} is not in {args.data}; choose from {', '.join(splits)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here (use auto or cpu)")


def run(args: argparse.Namespace) -> int:
    check(args)
    from fastasr.inference.evaluate import evaluate

    m = evaluate(args.checkpoint, args.data, args.split, args.out, beam=args.beam, device=args.device,
                 progress=sys.stderr.isatty(),
                 max_batch_seconds=args.max_batch_seconds, num_workers=args.workers, limit=args.limit,
                 allow_pipe=args.allow_pipe, allow_foreign_paths=args.allow_foreign_paths, chunk_ms=args.chunk_ms)
    chunks = f", {args.chunk_ms:g}-ms chunks" if args.chunk_ms else ""
    print(f"{args.split}: {m['utterances']} utterances, {m['reference_words']} words{chunks}")
    print(f"WER      {m['wer']:.2%}")
    print(f"CER      {m['cer']:.2%}")
    print(f"accuracy {m['accuracy']:.2%}  (word hits / reference words)")
    return 0
