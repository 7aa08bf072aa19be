"""`fastasr export CKPT --out DIR [--quantize int8] [--sherpa | --no-sherpa] [--chunk-ms MS] [--left-chunks N]`:
ONNX encoder / predictor / joiner + tokenizer + front-end settings, for `fastasr transcribe --model DIR` and
`fastasr.runtime` (onnxruntime + NumPy, no torch), and for sherpa-onnx when it computes the model's features
(model.frontend=kaldi): its offline recogniser, or for a streaming model its online one with the streaming encoder
graph (the chunk step with its caches) that the export of such a model adds."""

from __future__ import annotations

import argparse

from fastasr.commands.args import non_negative_int, positive_float


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by `fastasr train` (e.g. RUN_DIR/last.pt)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the export directory: written whole under a temporary name, then renamed into place; "
                        "an existing one is replaced only if it is an earlier fastasr export and nothing else")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="also write dynamically quantised copies (*.int8.onnx) beside the float graphs")
    p.add_argument("--sherpa", action=argparse.BooleanOptionalAction, default=None,
                   help="--sherpa: require that sherpa-onnx can load the directory as it is (tokens.txt and the "
                        "encoder's metadata; a model.frontend=kaldi model), an error for any other; --no-sherpa: "
                        "leave those out. Default: written when sherpa-onnx computes the model's features")
    p.add_argument("--chunk-ms", type=positive_float, default=None, metavar="MS",
                   help="a streaming model (model.streaming=true): the chunk of its streaming encoder graph, a "
                        "multiple of its encoder frame (default 640)")
    p.add_argument("--left-chunks", type=non_negative_int, default=None, metavar="N",
                   help="a streaming model: chunks of left context its attention keeps (default model.left_chunks; "
                        "needed when that is -1, all of the past, which a stream cannot hold)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the directory is written. A user mistake (missing or unreadable checkpoint, --out taken by
    something else, onnx / onnxruntime not installed, --sherpa for a model sherpa-onnx cannot run) is a UserError:
    one line, exit 2."""
    from fastasr.inference.export import export

    out = export(args.checkpoint, args.out, quantize=args.quantize, sherpa=args.sherpa, chunk_ms=args.chunk_ms,
                 left_chunks=args.left_chunks)
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out}: {', '.join(files)} ({size:.1f} MB)")
    return 0
