"""`fastasr eval`: decode a split with a checkpoint and score it (fastasr.text.scoring), metrics.json and a
per-utterance TSV."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from fastasr.errors import UserError
from fastasr.model.checkpoint import load_model, pick_device
from fastasr.model.decode import transcribe_loader
from fastasr.model.streaming import chunk_frames_of
from fastasr.text.scoring import score, utterance_char_errors, utterance_errors


def write_tsv(rows: list[tuple[str, str, str]], path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(["key", "reference", "hypothesis", "errors", "char_errors", "cer"])
        for key, ref, hyp in rows:
            chars, n = utterance_char_errors(ref, hyp)
            w.writerow([key, ref, hyp, utterance_errors(ref, hyp), chars, f"{chars / n:.4f}" if n else ""])


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test",
             out: str | os.PathLike | None = None, *, beam: int = 1, device: str = "auto",
             max_batch_seconds: float = 200.0, num_workers: int = 1, limit: int | None = None,
             allow_pipe: bool = False, allow_foreign_paths: bool = False, chunk_ms: float | None = None,
             progress: bool = False) -> dict:
    """Decode a split with a checkpoint; returns the metrics and, with `out`, writes metrics.json + utterances.tsv.
    allow_pipe, allow_foreign_paths: build_loader's opt-ins for an index read from a URL. chunk_ms: simulated
    streaming of a model.streaming=true model with attention chunks of that many milliseconds (chunk_frames_of).
    progress: a progress bar over the split's utterances on stderr."""
    from fastasr.data import build_loader
    from fastasr.model.transducer import log_mel, waveform_of

    dev = pick_device(device)
    model, tokenizer, config = load_model(checkpoint, dev)
    frontend = log_mel(config).to(dev)
    chunk_frames = None if chunk_ms is None else chunk_frames_of(config, chunk_ms, checkpoint)
    # The loader's tokens go unused (references are the texts), so it keeps the data's own character tokens: an
    # utterance the model's tokenizer could not encode is still scored, not skipped.
    loader = build_loader(data, split, max_batch_seconds=max_batch_seconds, num_workers=num_workers,
                          shuffle=False, infinite=False, rank=0, world_size=1, allow_pipe=allow_pipe,
                          allow_foreign_paths=allow_foreign_paths, waveform=waveform_of(config))
    from tqdm import tqdm

    total = loader_samples(data, split, allow_pipe, allow_foreign_paths)
    bar = tqdm(total=total if limit is None else min(limit, total or limit), unit="utt", dynamic_ncols=True,
               disable=not progress, desc=f"eval {split}")
    rows = []
    for row in transcribe_loader(model, tokenizer, frontend, loader, dev, beam=beam, limit=limit,
                                 chunk_frames=chunk_frames):
        rows.append(row)
        bar.update(1)
    bar.close()
    rows.sort()
    metrics = score([r for _, r, _ in rows], [h for _, _, h in rows])
    metrics.update(split=split, beam=beam, checkpoint=str(checkpoint), tokenizer=tokenizer.describe(),
                   chunk_ms=chunk_ms)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        write_tsv(rows, out / "utterances.tsv")
    return metrics


def loader_samples(data, split: str, allow_pipe: bool, allow_foreign_paths: bool) -> int | None:
    """The split's sample count from index.json (for the progress bar); None when it cannot be read."""
    from fastasr.shards.index import Reach, open_index

    try:
        _, index = open_index(data, "--data", reach=Reach(allow_pipe, allow_foreign_paths))
        return int(index["splits"][split]["samples"])
    except (UserError, KeyError, TypeError, ValueError):  # a bar without a total is still a bar
        return None
