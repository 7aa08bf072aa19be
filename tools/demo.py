"""The whole story on a fresh machine: synthesise a Russian corpus → shard (split by sentence) → stats → train a
fixed number of steps → average the last step checkpoints → eval last.pt, the average and the EMA → transcribe (and
with word times) → export to ONNX → transcribe with the export (onnxruntime, float and int8) → transcribe with
sherpa-onnx (the model is trained with model.frontend=kaldi, the fbank sherpa-onnx computes, unless --frontend
logmel) and say whether its texts agree.

Every step runs the real CLI (`python -m fastasr …`) so the demo exercises exactly what a user runs. A summary table
closes the run. Sizes scale up when CUDA is present.

Training runs a fixed number of steps, not minutes, so the model and its CER are the same on a slow machine as on a
fast one (a time budget trained 3,020 steps instead of ~5,400 on a loaded machine). The corpus is split with
`--group-by text`: the synthetic corpus says many sentences several times, and the test CER should measure
sentences the model never heard in training.
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
STEPS = 5400  # what the tiny preset reached in the old 20-minute budget on the idle 2-core machine (5,400–5,550)


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
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"optimiser steps to train (default {STEPS}: ~17 min of the tiny preset on 2 idle cores)")
    parser.add_argument("--preset", default=None, help="model preset (default tiny on CPU, small on GPU)")
    parser.add_argument("--tokenizer", default="char",
                        help="`fastasr train --tokenizer`: char, bpe:N, unigram:N or FILE.model (default char)")
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="train.ema_decay: keep an EMA of the weights (RUN/ema.pt) and score it too; 0: off "
                             "(default 0.999)")
    parser.add_argument("--average", type=int, default=5, metavar="N",
                        help="score the mean of the last N step checkpoints too (fastasr average; default 5)")
    parser.add_argument("--frontend", default="kaldi", choices=("logmel", "kaldi"),
                        help="model.frontend: kaldi (the fbank sherpa-onnx computes, so the export also runs there "
                             "and the demo ends by transcribing with sherpa-onnx) or logmel (fastasr's own); "
                             "default kaldi")
    parser.add_argument("--threads", type=int, default=0,
                        help="train.threads: torch threads for training on CPU (default 0: torch's default)")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args()

    gpu = has_cuda()
    n_utt = args.utterances or (12000 if gpu else 6000)
    steps = args.steps
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
        [py, "-m", "fastasr", "shard", str(corpus), str(shards), "--manifest", str(corpus / "public_synth.csv"),
         "--group-by", "text"],
    )
    times["stats"] = step("corpus statistics", [py, "-m", "fastasr", "stats", str(shards), "--plots", str(out / "plots")])
    train_cmd = [py, "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run), "--preset", preset,
                 "--tokenizer", args.tokenizer, "--max-steps", str(steps), f"train.ema_decay={args.ema_decay}",
                 f"train.threads={args.threads}", f"model.frontend={args.frontend}"]
    if (run / "last.pt").exists():
        train_cmd.append("--resume")
    times["train"] = step(f"train the {preset} RNN-T model ({steps} steps, tokenizer {args.tokenizer})", train_cmd)
    ckpt = run / "last.pt"
    scored = {"last.pt": ckpt}
    n_avg = min(args.average, len(list(run.glob("step-*.pt"))))
    if n_avg >= 2:
        scored[f"average of last {n_avg}"] = out / "average.pt"
        times["average"] = step(f"average the last {n_avg} step checkpoints",
                                [py, "-m", "fastasr", "average", str(run), "--last", str(n_avg),
                                 "--out", str(out / "average.pt")])
    if args.ema_decay > 0:
        scored[f"EMA {args.ema_decay:g}"] = run / "ema.pt"
    results = {}
    for i, (label, path) in enumerate(scored.items()):
        results[label] = out / ("eval" if i == 0 else f"eval-{path.stem}")
        times[f"eval ({label})"] = step(
            f"evaluate {label} on the test split",
            [py, "-m", "fastasr", "eval", "--checkpoint", str(path), "--data", str(shards), "--split", "test",
             "--out", str(results[label])],
        )
    index = json.loads((shards / "index.json").read_text())
    agree = transcribe_and_export(py, ckpt, corpus, shards, out, times)
    print_summary(index, out, times, agree, results, scored)
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
    times["transcribe --timestamps"] = step(
        "the same short files with each word's times ([word, start s, end s]: the frames that emitted its tokens)",
        [py, "-m", "fastasr", "transcribe", "--checkpoint", str(ckpt), "--timestamps", *map(str, samples)],
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
    agree["sherpa-onnx"] = sherpa_check(py, export_dir, audio, from_checkpoint, times)
    return agree


def sherpa_check(py: str, export_dir: Path, audio: list[str], from_checkpoint: str, times: dict[str, float]) -> str:
    """Transcribe the same files with sherpa-onnx (tools/sherpa_transcribe.py) when the export carries its files;
    how many give the checkpoint's words. The long recording is cut at pauses by fastasr and not by sherpa-onnx."""
    if not (export_dir / "tokens.txt").is_file():
        return "not run: the model's front end is fastasr's log-mel (train with --frontend kaldi)"
    import importlib.util

    if importlib.util.find_spec("sherpa_onnx") is None:
        return "not run: sherpa-onnx is not installed (pip install sherpa-onnx==2.0.1)"
    times["transcribe (sherpa-onnx)"], lines = step_output(
        "transcribe the same files with sherpa-onnx 2.0.1 (its own fbank, the export's graphs and tokens.txt)",
        [py, "tools/sherpa_transcribe.py", str(export_dir), *audio],
    )
    words = [" ".join(line.split("\t", 1)[-1].split()) for line in lines.splitlines()]
    want = [" ".join(line.split("\t", 1)[-1].split()) for line in from_checkpoint.splitlines()]
    same = sum(a == b for a, b in zip(words, want))
    short = sum(a == b for a, b in zip(words[:-1], want[:-1]))
    print(f"sherpa-onnx: {same} of {len(audio)} files the checkpoint's words ({short} of {len(audio) - 1} short "
          "files; the long recording is cut at pauses by fastasr only)")
    return f"{same} of {len(audio)} files ({short} of {len(audio) - 1} short ones)"


def transcribe_inputs(corpus: Path, shards: Path, out: Path, n: int = 3, joined: int = 12):
    """n accepted corpus files, and one long recording: `joined` accepted files end to end, 0.4 s of silence
    between them (longer than the 30-s piece limit of `fastasr transcribe`)."""
    import numpy as np
    import soundfile as sf

    from fastasr.audio.files import SAMPLE_RATE, mono_16k
    from fastasr.shards.index import read_rejected_tsv

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


def tokenizer_of(run: Path, ckpt: Path) -> str:
    """The run's tokenizer in words, read defensively: RUN/config.json's record (`spec`, `vocab_size` with the
    blank), else the checkpoint's `tokenizer` (SentencePiece: `model_type`, `vocab_size` in pieces) or `alphabet`."""
    try:
        record = json.loads((run / "config.json").read_text()).get("tokenizer")
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and "spec" in record:
        size = record.get("vocab_size")
        return f"{record['spec']} ({size} tokens with the blank)" if size else str(record["spec"])
    try:
        import torch

        saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # a checkpoint is data (DESIGN.md)
    except Exception as err:  # the summary must not fail for want of a label
        return f"? (checkpoint unreadable: {type(err).__name__})"
    tok = saved.get("tokenizer")
    if isinstance(tok, dict) and tok.get("type") == "sentencepiece":
        return f"{tok.get('model_type', '?')}:{tok.get('vocab_size', '?')} (SentencePiece)"
    alphabet = tok.get("alphabet") if isinstance(tok, dict) else saved.get("alphabet")
    return f"char ({len(alphabet) + 1} tokens with the blank)" if alphabet else "?"


def sentences_shared(shards: Path, index: dict, eval_dir: Path) -> tuple[int, int]:
    """(test utterances whose transcript is also a train transcript, test utterances): 0 with --group-by text."""
    import csv
    import tarfile

    train = set()
    for shard in index["splits"]["train"]["shards"]:
        with tarfile.open(shards / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".txt"):
                    train.add(tar.extractfile(member).read().decode("utf-8").strip())
    refs = []
    with open(eval_dir / "utterances.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"):
            refs.append(row["reference"].strip())
    return sum(r in train for r in refs), len(refs)


def print_summary(index: dict, out: Path, times: dict[str, float], agree: dict[str, str],
                  results: dict[str, Path], scored: dict[str, Path]) -> None:
    metrics = {label: json.loads((path / "metrics.json").read_text()) for label, path in results.items()}
    first = next(iter(metrics.values()))
    train_summary_path = out / "run" / "summary.json"
    train = json.loads(train_summary_path.read_text()) if train_summary_path.exists() else {}
    shared, n_test = sentences_shared(out / "shards", index, next(iter(results.values())))
    rows = [
        ("utterances sharded", f"{index['totals']['samples']} ({index['totals']['rejected']} rejected)"),
        ("hours sharded", f"{index['totals']['seconds'] / 3600:.2f}"),
        *[("train/val/test hours", " / ".join(f"{index['splits'][s]['seconds'] / 3600:.2f}"
                                             for s in ("train", "val", "test")))],
        ("test utterances whose sentence is in train", f"{shared} of {n_test} (split --group-by text)"),
        ("tokenizer", tokenizer_of(out / "run", scored["last.pt"])),
        *[(k, str(v)) for k, v in train.items() if isinstance(v, (int, float, str))],
        *[(f"test CER / WER, {label}", f"{m['cer']:.2%} / {m['wer']:.2%}") for label, m in metrics.items()],
        ("test word accuracy, last.pt", f"{first['accuracy']:.2%}"),
        *[(f"{label if label == 'sherpa-onnx' else f'export ({label})'} = checkpoint's text", same)
          for label, same in agree.items()],
        *[(f"time: {k}", f"{v:.0f} s") for k, v in times.items()],
    ]
    width = max(len(k) for k, _ in rows)
    print("\n=== summary")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
