"""A render task for tools/synth_corpus.py's pool whose worker dies (SIGSEGV) at the job named in OUT/.crash_target,
once: the retry path, reproduced (spawned workers import this module by name)."""

import os
import signal
from pathlib import Path

import synth_corpus


def render_dying_once(task):
    out, job = task
    target, marker = Path(out) / ".crash_target", Path(out) / ".crashed_once"
    if not marker.exists() and target.read_text() == job.rel:
        marker.write_text(job.rel)
        os.kill(os.getpid(), signal.SIGSEGV)
    return synth_corpus._render_task(task)
