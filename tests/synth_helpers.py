"""espeak-ng work for tests/tools/test_synth_corpus.py that runs in a spawned process (which imports this module by name):
espeak-ng's global state stays out of the test process, as tools/synth_corpus.py keeps it out of its caller's."""

import os
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import espeak_tts
import synth_corpus


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def synthesize_all(jobs):
    return [synth_corpus.synthesize(job) for job in jobs]


def synth_lengths(text, voices):
    engine = espeak_tts.Espeak()
    return [len(engine.synth(text, voice)) for voice in voices]


def render_dying_once(task):
    """A render task whose worker dies (SIGSEGV) at the job named in OUT/.crash_target, once."""
    out, job = task
    target, marker = Path(out) / ".crash_target", Path(out) / ".crashed_once"
    if not marker.exists() and target.read_text() == job.rel:
        marker.write_text(job.rel)
        os.kill(os.getpid(), signal.SIGSEGV)
    return synth_corpus._render_task(task)
