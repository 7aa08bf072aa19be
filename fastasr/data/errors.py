"""The loader's one error policy: every stage hands a bad sample to `handler(exc, key, stage)`, which either
raises (stop the run) or returns (the sample is skipped). SkipAndCount logs a warning naming the KEY and counts
the skip by reason."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("fastasr.data")


class SampleError(ValueError):
    """A sample that cannot be used; `reason` is a short tag for the counts (bad_json, no_audio, decode, …)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def reason_of(exc: BaseException, stage: str) -> str:
    return exc.reason if isinstance(exc, SampleError) else f"{stage}:{type(exc).__name__}"


def raise_errors(exc: BaseException, key: str | None, stage: str) -> None:
    """Policy 'raise': any bad sample stops the run."""
    raise exc


class SkipAndCount:
    """Policy 'skip': log a warning naming the KEY (or shard), count by reason, go on.

    `quiet=True` counts without logging (used when the same samples are read twice, e.g. planning a resume).
    """

    def __init__(self, quiet: bool = False):
        self.counts: Counter[str] = Counter()
        self.quiet = quiet

    def __call__(self, exc: BaseException, key: str | None, stage: str) -> None:
        reason = reason_of(exc, stage)
        self.counts[reason] += 1
        if not self.quiet:
            log.warning("skipped %s in %s (%s): %s", key, stage, reason, exc)

    def take(self) -> dict[str, int]:
        """The counts so far, and reset (one report per epoch)."""
        out = dict(self.counts)
        self.counts.clear()
        return out
