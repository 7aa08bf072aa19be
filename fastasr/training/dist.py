"""The ranks of a training job: torchrun's environment, the process group and its timeout, and how a rank's death is
reported (multi-node notes in the README: a dead rank ends the job within train.dist_timeout_s, never a hang)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger("fastasr.train")


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str = "auto", timeout_s: float = 600.0) -> Dist:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK when present; a single process otherwise.

    Under torchrun a collective waits at most `timeout_s` for its peers, then fails and ends this rank (gloo raises;
    NCCL's watchdog ends the process), so a dead rank ends the job instead of hanging it; an exception that ends a
    rank is logged with the rank's name first.
    """
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        _log_exit_with_rank(rank, world, local_rank)
        if use_cuda and not {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING"} & set(os.environ):
            # A timed-out NCCL collective ends the process without ncclCommAbort (which can itself hang on a dead
            # peer): torch's default since 2.2, stated so that the behaviour does not depend on the build.
            os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "3"
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return Dist(rank, world, local_rank, device)


def _log_exit_with_rank(rank: int, world: int, local_rank: int) -> None:
    """An exception that ends this process is logged naming the rank, its node and the world size, so that in N
    nodes' logs the first failure (the cause) and the peers' failed collectives that follow it can be told apart.
    Installed before init_process_group: a failing rendezvous is named too, and torch's own hook (which prefixes
    `[rankN]:` to each line once the group is up) wraps this one."""
    previous = sys.excepthook
    where = f"rank {rank}/{world} (local rank {local_rank} on {socket.gethostname()})"

    def hook(kind, value, tb):
        if issubclass(kind, Exception):
            log.error(f"{where} failed: {kind.__name__}: {value}", exc_info=(kind, value, tb))
            for handler in logging.getLogger("fastasr").handlers:
                handler.flush()
        else:  # KeyboardInterrupt, SystemExit: the usual report
            previous(kind, value, tb)

    sys.excepthook = hook


def gather(obj, d: Dist) -> list:
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
