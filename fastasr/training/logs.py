"""Training records on the main rank: the train / val CSV logs (mirrored to TensorBoard) and the loss plot."""

from __future__ import annotations

import csv
from pathlib import Path


class Logs:
    """CSV + TensorBoard on the main rank; a no-op elsewhere."""

    def __init__(self, run: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        self.rows: dict[str, list[dict]] = {"train": [], "val": []}
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"))
            except Exception as err:  # tensorboard is optional at run time; the CSV is the record
                print(f"tensorboard disabled: {err}")
            self.files = {k: run / f"{k}_log.csv" for k in self.rows}

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
