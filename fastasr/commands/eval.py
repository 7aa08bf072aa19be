"""`fastasr eval --checkpoint CKPT --data OUT [--split test] [--out DIR]`: WER / CER / word accuracy."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="shard directory (with index.json)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="directory for metrics.json and utterances.tsv")
    p.add_argument("--beam", type=int, default=1, help="beam width; 1 = batched greedy decoding")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-batch-seconds", type=float, default=200.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="score only the first N utterances")


def run(args: argparse.Namespace) -> int:
    from fastasr.evaluate import evaluate

    m = evaluate(args.checkpoint, args.data, args.split, args.out, beam=args.beam, device=args.device,
                 max_batch_seconds=args.max_batch_seconds, num_workers=args.workers, limit=args.limit)
    print(f"{args.split}: {m['utterances']} utterances, {m['reference_words']} words")
    print(f"WER      {m['wer']:.2%}")
    print(f"CER      {m['cer']:.2%}")
    print(f"accuracy {m['accuracy']:.2%}  (word hits / reference words)")
    return 0
