"""`python tests/multinode_worker.py train …` is `python -m fastasr train …` plus a fault (tests/training/test_multinode.py).

FASTASR_TEST_FAULT=STEP:KIND (set for one torchrun "node" only) makes its worker, at the start of step STEP, first
write `time.time()` and its pid to FASTASR_TEST_FAULT_STAMP, then:
  kill    SIGKILL itself (a crash, the kernel's OOM killer);
  raise   raise InjectedFault (a Python error);
  freeze  SIGSTOP its torchrun agent and then itself (a machine that hangs: sockets open, nothing answers).
The hook goes in through train()'s batch_hook, so the product code carries no fault switch.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time

import fastasr.training.loop
from fastasr.cli import main


class InjectedFault(RuntimeError):
    pass


def fault(at: int, kind: str, step: int, batch):
    if step != at:
        return batch
    with open(os.environ["FASTASR_TEST_FAULT_STAMP"], "w") as f:
        f.write(f"{time.time()} {os.getpid()}\n")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "freeze":
        os.kill(os.getppid(), signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)
        return batch
    raise InjectedFault(f"injected at step {step}")


if __name__ == "__main__":
    spec = os.environ.get("FASTASR_TEST_FAULT")
    if spec:
        step, kind = spec.split(":")
        assert kind in ("kill", "raise", "freeze"), spec
        # fastasr.commands.train looks train up when it runs, so the wrapped one is what it calls.
        fastasr.training.loop.train = functools.partial(fastasr.training.loop.train,
                                                batch_hook=functools.partial(fault, int(step), kind))
    sys.exit(main())
