"""Training records on the main rank: the train / val CSV logs (mirrored to TensorBoard) and the loss plot."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class Logs:
    """CSV + TensorBoard on the main rank; a no-op elsewhere.

    resumed_at: the step a resumed run continues from. What an interrupted run logged after its checkpoint is
    dropped (CSV rows rewritten without them, TensorBoard's purge_step), so that every step appears once."""

    def __init__(self, run: Path, enabled: bool, resumed_at: int | None = None):
        self.enabled = enabled
        self.tb = None
        self.rows: dict[str, list[dict]] = {"train": [], "val": []}
        if enabled:
            self.files = {k: run / f"{k}_log.csv" for k in self.rows}
            if resumed_at is not None:
                for path in self.files.values():
                    _drop_after(path, resumed_at)
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resumed_at is None else resumed_at + 1
                self.tb = SummaryWriter(str(run / "tb"), purge_step=purge)
            except Exception as err:  # tensorboard is optional at run time; the CSV is the record
                print(f"tensorboard disabled: {err}")

    def write(self, kind: str, row: dict) -> None:
        if not self.enabled:
            return
        path = self.files[kind]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        self.rows[kind].append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _drop_after(path: Path, step: int) -> None:
    """Rewrite the CSV log at `path` without its rows after `step` (renamed into place: never half-written)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) == len(rows) or not fields:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(kept)
    os.replace(tmp, path)


def plot_losses(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for kind, style in (("train", "-"), ("val", "o-")):
        path = run / f"{kind}_log.csv"
        if path.exists():
            rows = list(csv.DictReader(open(path)))
            ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], style, label=f"{kind} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("RNN-T loss (nats / utterance)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "loss.png", dpi=120)
    plt.close(fig)
