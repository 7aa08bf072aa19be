"""Which shards (or parts of shards) each rank and each worker reads in an epoch.

Reader slots are rank × worker. Each epoch the shard list is shuffled with (seed, epoch), then dealt out: split by
node (every world_size-th piece from `rank`), then split by worker (every workers-th piece of the rank's from
`role`). When there are fewer shards than slots, each shard is cut into `parts` interleaved parts (sample ordinal
mod parts) so that every slot still gets a piece; a part is read by streaming the shard and seeking over the other
parts' bytes. Pieces are disjoint and cover every shard, so across ranks and workers each utterance is read exactly
once per epoch, whatever the counts (shards not divisible by world size, more workers than shards, …).
"""

from __future__ import annotations

import math

import numpy as np

from .sample import Piece


def resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """rank/world_size as given, else torch.distributed's when initialised, else 0/1."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return rank, world_size


def epoch_pieces(shards: list[str], *, epoch: int, seed: int, shuffle: bool, slots: int) -> list[Piece]:
    """All pieces of one epoch in reading order (the same list on every rank and worker)."""
    order = list(shards)
    if shuffle and order:
        perm = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(order))
        order = [order[i] for i in perm]
    parts = 1 if len(order) >= slots or not order else math.ceil(slots / len(order))
    return [Piece(path, part, parts) for path in order for part in range(parts)]


def pieces_for(shards: list[str], *, epoch: int, seed: int, shuffle: bool, rank: int, world_size: int,
               role: int, workers: int) -> list[Piece]:
    """The pieces reader `role` of `rank` reads in `epoch`: split by node, then split by worker."""
    pieces = epoch_pieces(shards, epoch=epoch, seed=seed, shuffle=shuffle, slots=world_size * workers)
    return pieces[rank::world_size][role::workers]
