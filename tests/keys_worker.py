"""`python tests/keys_worker.py train …` is `python -m fastasr train …` that also writes, for every batch a step takes,
`epoch<TAB>key` lines to FASTASR_TEST_KEYS_DIR/keys-<pid>.tsv (through train()'s batch_hook): what each rank trained
on, for tests/training/test_world_size.py."""

from __future__ import annotations

import functools
import os
import sys

import fastasr.training.loop
from fastasr.cli import main


def record(path: str, step: int, batch):
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{batch.epoch}\t{k}\n" for k in batch.keys)
    return batch


if __name__ == "__main__":
    out = os.path.join(os.environ["FASTASR_TEST_KEYS_DIR"], f"keys-{os.getpid()}.tsv")
    fastasr.training.loop.train = functools.partial(fastasr.training.loop.train, batch_hook=functools.partial(record, out))
    sys.exit(main())
