"""Interrupts that save: SIGINT (Ctrl-C) and SIGTERM (a scheduler's pre-emption) end training after the current
optimiser step, with a checkpoint at that step, instead of a traceback and the steps since the last checkpoint lost.

`Interrupts` remembers the first signal; the loop reads `requested` after each step. A single process stops at that
step. Under torchrun the ranks agree at the next sync point (fastasr.training.step.Window.read gathers every rank's
flag), so all of them save the same step even when the signal reached them between different steps; a sync point
comes every train.log_every steps. A second SIGINT more than SECOND_SIGNAL_S after the first stops at once
(KeyboardInterrupt): torchrun forwards a terminal's Ctrl-C to ranks that already received it, which must not count
as a second one. DataLoader workers ignore both signals (fastasr.data.loader's worker_init_fn): the main process
decides, and its workers end with it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger("fastasr.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SECOND_SIGNAL_S = 1.0


class Interrupts:
    """A context manager: while inside, SIGINT and SIGTERM are remembered instead of ending the process."""

    def __init__(self):
        self.signum: int | None = None
        self.at = 0.0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's code for death by the signal (130 SIGINT, 143 SIGTERM), which schedulers read."""
        return 128 + self.signum if self.signum else 0

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT and time.monotonic() - self.at > SECOND_SIGNAL_S:
                self.__exit__(None, None, None)
                raise KeyboardInterrupt
            return
        self.signum, self.at = signum, time.monotonic()
        log.warning("%s: stopping after this step with a checkpoint (Ctrl-C again to stop at once, unsaved)",
                    signal.Signals(signum).name)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
