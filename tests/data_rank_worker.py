"""One rank of the 2-process gloo test (tests/data/test_distributed.py).

Usage: python data_rank_worker.py RANK WORLD INIT_METHOD SHARD_DIR OUT_JSON
"""

import json
import sys

import torch
import torch.distributed as dist

from fastasr.data import build_loader


def main(rank: int, world: int, init: str, shards: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    # finite mode: each rank its part; rank/world_size come from torch.distributed
    keys = [k for b in build_loader(shards, max_batch_seconds=3.0, num_workers=2, seed=4) for k in b.keys]
    # infinite mode: lockstep training-like loop with a collective per step, although ranks hold unequal data
    steps, epochs = 0, set()
    for b in build_loader(shards, max_batch_seconds=3.0, num_workers=1, seed=4, infinite=True):
        t = torch.tensor([float(len(b.keys))])
        dist.all_reduce(t)
        epochs.add(b.epoch)
        steps += 1
        if steps == 25:
            break
    dist.barrier()
    with open(out, "w") as f:
        json.dump({"keys": keys, "steps": steps, "epochs": sorted(epochs)}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
