"""`fastasr export CKPT --out DIR [--quantize int8] [--sherpa | --no-sherpa]`: ONNX encoder / predictor / joiner +
tokenizer + front-end settings, for `fastasr transcribe --model DIR` and `fastasr.runtime` (onnxruntime + NumPy, no
torch), and for sherpa-onnx's offline recogniser when it computes the model's features (model.frontend=kaldi)."""

from __future__ import annotations

import argparse


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


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the directory is written. A user mistake (missing or unreadable checkpoint, --out taken by
    something else, onnx / onnxruntime not installed, --sherpa for a model sherpa-onnx cannot run) is a UserError:
    one line, exit 2."""
    from fastasr.inference.export import export

    out = export(args.checkpoint, args.out, quantize=args.quantize, sherpa=args.sherpa)
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out}: {', '.join(files)} ({size:.1f} MB)")
    return 0
