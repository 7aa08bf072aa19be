"""The whole story on a fresh machine: synthesise a Russian corpus → shard → stats → train → eval → transcribe →
export to ONNX → transcribe with the export (onnxruntime, float and int8).

Every step runs the real CLI (`python -m fastasr …`) so the demo exercises exactly what a user runs. A summary table
closes the run. Sizes scale up when CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(title: str, cmd: list[str]) -> float:
    return step_output(title, cmd, capture=False)[0]


def step_output(title: str, cmd: list[str], capture: bool = True) -> tuple[float, str]:
    """Seconds taken, and stdout (also printed) when captured."""
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    if capture:
        print(done.stdout, end="", flush=True)
    return time.perf_counter() - start, done.stdout or ""


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--utterances", type=int, default=None, help="corpus size (default: 6000 CPU, 12000 GPU)")
    parser.add_argument("--train-minutes", type=float, default=None, help="training budget (default 20 CPU, 20 GPU)")
    parser.add_argument("--preset", default=None, help="model preset (default tiny on CPU, small on GPU)")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args()

    gpu = has_cuda()
    n_utt = args.utterances or (12000 if gpu else 6000)
    minutes = args.train_minutes or 20.0
    preset = args.preset or ("small" if gpu else "tiny")
    out = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    corpus, shards, run = out / "corpus", out / "shards", out / "run"
    py = sys.executable
    times: dict[str, float] = {}

    if not (corpus / "public_synth.csv").exists():
        times["synthesise"] = step(
            "synthesise a Russian speech corpus (espeak-ng, Open STT layout, with bad cases)",
            [py, "tools/synth_corpus.py", str(corpus), "--utterances", str(n_utt), "--noise", "--bad"],
        )
    times["shard"] = step(
        "pack it into WebDataset shards",
        [py, "-m", "fastasr", "shard", str(corpus), str(shards), "--manifest", str(corpus / "public_synth.csv")],
    )
    times["stats"] = step("corpus statistics", [py, "-m", "fastasr", "stats", str(shards), "--plots", str(out / "plots")])
    train_cmd = [py, "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run), "--preset", preset,
                 "--max-minutes", str(minutes)]
    if (run / "last.pt").exists():
        train_cmd.append("--resume")
    times["train"] = step(f"train the {preset} RNN-T model ({minutes:g} min budget)", train_cmd)
    ckpt = run / "last.pt"
    times["eval"] = step(
        "evaluate on the test split",
        [py, "-m", "fastasr", "eval", "--checkpoint", str(ckpt), "--data", str(shards), "--split", "test",
         "--out", str(out / "eval")],
    )
    index = json.loads((shards / "index.json").read_text())
    agree = transcribe_and_export(py, ckpt, corpus, shards, out, times)
    print_summary(index, out, times, agree)
    return 0


def transcribe_and_export(py: str, ckpt: Path, corpus: Path, shards: Path, out: Path,
                          times: dict[str, float]) -> dict[str, str]:
    """Transcribe with the checkpoint, export it, transcribe the same files with the export (float, int8); how
    many files' lines the export printed exactly as the checkpoint did, per precision."""
    samples, long = transcribe_inputs(corpus, shards, out)
    audio = [*map(str, samples), str(long[0])]
    times["transcribe"], from_checkpoint = step_output(
        f"transcribe a few files and a {long[1]:.0f}-s recording made of {long[2]} of them (cut at pauses)",
        [py, "-m", "fastasr", "transcribe", "--checkpoint", str(ckpt), *audio],
    )
    export_dir = out / "export"
    times["export"] = step(
        "export the model: ONNX encoder / predictor / joiner (float and int8) + tokenizer + front-end settings",
        [py, "-m", "fastasr", "export", str(ckpt), "--out", str(export_dir), "--quantize", "int8"],
    )
    agree = {}
    for label, extra in (("float", []), ("int8", ["--int8"])):
        times[f"transcribe (export, {label})"], lines = step_output(
            f"transcribe the same files with the {label} export (onnxruntime + NumPy, torch never imported)",
            [py, "-m", "fastasr", "transcribe", "--model", str(export_dir), *extra, *audio],
        )
        same = sum(a == b for a, b in zip(lines.splitlines(), from_checkpoint.splitlines()))
        agree[label] = f"{same} of {len(audio)} files"
    return agree


def transcribe_inputs(corpus: Path, shards: Path, out: Path, n: int = 3, joined: int = 12):
    """n accepted corpus files, and one long recording: `joined` accepted files end to end, 0.4 s of silence
    between them (longer than the 30-s piece limit of `fastasr transcribe`)."""
    import numpy as np
    import soundfile as sf

    from fastasr.audio_files import SAMPLE_RATE, mono_16k
    from fastasr.shard_index import read_rejected_tsv

    rejected = {source for source, _, _ in read_rejected_tsv(shards / "rejected.tsv")}
    accepted = [p for p in sorted((corpus / "public_synth").rglob("*.opus"))
                if p.relative_to(corpus).as_posix() not in rejected]
    pieces = []
    for path in accepted[n:n + joined]:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        pieces += [mono_16k(audio, sr), np.zeros(int(0.4 * SAMPLE_RATE), np.float32)]
    long = np.concatenate(pieces)
    path = out / "long_recording.wav"
    sf.write(str(path), long, SAMPLE_RATE, subtype="FLOAT")
    return accepted[:n], (path, long.size / SAMPLE_RATE, joined)


def print_summary(index: dict, out: Path, times: dict[str, float], agree: dict[str, str]) -> None:
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    train_summary_path = out / "run" / "summary.json"
    train = json.loads(train_summary_path.read_text()) if train_summary_path.exists() else {}
    rows = [
        ("utterances sharded", f"{index['totals']['samples']} ({index['totals']['rejected']} rejected)"),
        ("hours sharded", f"{index['totals']['seconds'] / 3600:.2f}"),
        *[("train/val/test hours", " / ".join(f"{index['splits'][s]['seconds'] / 3600:.2f}"
                                             for s in ("train", "val", "test")))],
        *[(k, str(v)) for k, v in train.items() if isinstance(v, (int, float, str))],
        ("test WER", f"{metrics['wer']:.2%}"),
        ("test CER", f"{metrics['cer']:.2%}"),
        ("test word accuracy", f"{metrics['accuracy']:.2%}"),
        *[(f"export ({label}) = checkpoint's text", same) for label, same in agree.items()],
        *[(f"time: {k}", f"{v:.0f} s") for k, v in times.items()],
    ]
    width = max(len(k) for k, _ in rows)
    print("\n=== summary")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
