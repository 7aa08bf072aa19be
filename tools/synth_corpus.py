"""Synthesise a Russian speech corpus in Open STT's exact layout, for the demo and the tests.

    python tools/synth_corpus.py OUT --utterances 3000 [--seed 0] [--workers N] [--noise] [--bad] [--hifi-fraction F]

OUT/<dataset>/<h0>/<h1h2>/<12 hex>.opus with the transcript beside it as .txt, and the headerless manifest
OUT/<dataset>.csv with rows `audio_path,text_path,duration` (paths relative to OUT), as Open STT ships them.
Speech comes from espeak-ng (the espeakng-loader wheel) with several Russian voices, speeds and pitches, resampled
to 16 kHz with soxr and written as Ogg/Opus by libsndfile. Transcripts follow Open STT's conventions: lowercase
Cyrillic and spaces, numbers spelled out, hyphenated words joined, ё kept in ~12 % of utterances.

--bad adds the broken inputs a real crawl holds; OUT/bad_cases.json maps each one's audio path to the reason the
sharder must reject it with. Everything is a function of --seed: utterance i's text, voice, noise and bad-case plan
are the same whatever --utterances and --workers are. Its waveform can differ by a few milliseconds between runs
with other --workers (or after a crashed worker's jobs are rendered again): espeak-ng's synthesiser carries state
from one utterance to the next within a process; jobs go to workers in chunks of four, in job order.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when imported as tools.synth_corpus

import espeak_tts  # noqa: E402
import ru_text  # noqa: E402

SAMPLE_RATE = 16000
YO_KEEP = 0.85  # ~14 % of the text source's utterances have ё; keeping it in 85 % of those gives Open STT's ~12 %
RATE_RANGE = (125, 215)  # espeak words per minute: 10–17 characters per second, Open STT's usual range
BAD_REASONS = ("audio_missing", "audio_empty", "audio_undecodable", "transcript_missing", "transcript_empty",
               "transcript_not_utf8", "digits", "latin", "out_of_alphabet", "duration_too_short",
               "duration_too_long", "speaking_rate")


@dataclass(frozen=True)
class Job:
    """One file to render; everything random about it is already drawn, so any process renders it the same."""

    rel: str  # audio path relative to OUT, without extension
    spoken: str
    transcript: bytes | None  # the .txt's bytes; None: no .txt
    voice: espeak_tts.VoiceSettings
    seed: int
    snr_db: float | None = None
    hifi: bool = False  # 48 kHz stereo instead of 16 kHz mono
    min_seconds: float = 0.0  # pad with silence up to this
    max_seconds: float = float("inf")  # cut to this
    render: bool = True  # False: the audio file is made by the damage step alone
    damage: str = ""  # "", "truncate", "garbage", "zero", "absent"
    bad_reason: str = ""


@dataclass
class Summary:
    out: str
    manifest: str
    utterances: int
    bad_cases: dict[str, int]
    hifi: int
    seconds: float
    wall_seconds: float
    workers: int
    voices: list[str] = field(default_factory=list)

    @property
    def utterances_per_second(self) -> float:
        return (self.utterances + sum(self.bad_cases.values())) / max(self.wall_seconds, 1e-9)

    @property
    def realtime_factor(self) -> float:
        return self.seconds / max(self.wall_seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**self.__dict__, "utterances_per_second": round(self.utterances_per_second, 2),
                "realtime_factor": round(self.realtime_factor, 1)}


def make_corpus(out: str | Path, n_utterances: int, *, seed: int = 0, workers: int | None = None,
                dataset_name: str = "public_synth", noise_fraction: float = 0.0, snr_db=(10.0, 35.0),
                bad: bool = False, bad_per_reason: int = 1, hifi_fraction: float = 0.0,
                compression_level: float | None = None, overwrite: bool = False, progress: bool = True) -> Summary:
    """Write the corpus under `out` and return a Summary (files, seconds of audio, speed)."""
    out = Path(out)
    manifest = out / f"{dataset_name}.csv"
    if manifest.exists() and not overwrite:
        raise FileExistsError(f"{manifest} exists; pass overwrite=True (--overwrite) to make the corpus again")
    # Without its manifest the dataset folder is a run that did not finish: start again from nothing.
    shutil.rmtree(out / dataset_name, ignore_errors=True)
    for stale in (manifest, out / "bad_cases.json"):
        stale.unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()

    source = ru_text.TextSource()
    variants = espeak_tts.available_variants()
    jobs = [_good_job(source, variants, dataset_name, seed, i, noise_fraction, snr_db, hifi_fraction)
            for i in range(n_utterances)]
    if bad:
        jobs += _bad_jobs(source, variants, dataset_name, seed, bad_per_reason)

    durations = _render_all(out, jobs, workers, compression_level, progress)
    rows, cases = [], {}
    for job in jobs:
        audio_rel = job.rel + ".opus"
        _damage(out / audio_rel, job.damage)
        rows.append((audio_rel, job.rel + ".txt", durations.get(job.rel, 0.0)))
        if job.bad_reason:
            cases[audio_rel] = job.bad_reason
    rows.sort()  # a directory listing's order, so the bad rows are spread through the manifest
    with open(out / "bad_cases.json.tmp", "w", encoding="utf-8") as f:
        json.dump(dict(sorted(cases.items())), f, indent=1, ensure_ascii=False)
    os.replace(out / "bad_cases.json.tmp", out / "bad_cases.json")
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:  # written last: its presence means "complete"
        csv.writer(f, lineterminator="\n").writerows((a, t, f"{d:.4f}") for a, t, d in rows)
    os.replace(tmp, manifest)

    good = [j for j in jobs if not j.bad_reason]
    return Summary(
        out=str(out), manifest=str(manifest), utterances=len(good),
        bad_cases={r: sum(1 for j in jobs if j.bad_reason == r) for r in BAD_REASONS if bad},
        hifi=sum(j.hifi for j in good), seconds=round(sum(durations.get(j.rel, 0.0) for j in jobs), 2),
        wall_seconds=round(time.perf_counter() - start, 2), workers=workers,
        voices=sorted({j.voice.name for j in good}))


# ---------------------------------------------------------------------------------------------------------- jobs


def _rel(dataset: str, seed: int, tag: str) -> str:
    h = hashlib.sha1(f"{dataset}:{seed}:{tag}".encode()).hexdigest()
    return f"{dataset}/{h[0]}/{h[1:3]}/{h[3:15]}"


def _voice(rng: random.Random, variants: list[str]) -> espeak_tts.VoiceSettings:
    return espeak_tts.VoiceSettings(
        language=rng.choice(espeak_tts.LANGUAGES), variant=rng.choice(variants), rate=rng.randint(*RATE_RANGE),
        pitch=rng.randint(25, 75), pitch_range=rng.randint(20, 80), word_gap=rng.choice((0, 0, 0, 1, 2)))


def _good_job(source, variants, dataset, seed, i, noise_fraction, snr_db, hifi_fraction) -> Job:
    rng = random.Random(f"{seed}:utt:{i}")
    spoken = source.utterance(rng)
    keep_yo = rng.random() < YO_KEEP
    transcript = ru_text.to_transcript(spoken, keep_yo=keep_yo)
    voice = _voice(rng, variants)
    snr = rng.uniform(*snr_db) if rng.random() < noise_fraction else None
    hifi = rng.random() < hifi_fraction
    return Job(_rel(dataset, seed, f"utt:{i}"), spoken, transcript.encode("utf-8"), voice, rng.getrandbits(63),
               snr_db=snr, hifi=hifi, min_seconds=rng.uniform(0.8, 1.2))


def _bad_jobs(source, variants, dataset, seed, per_reason) -> list[Job]:
    jobs = []
    for reason in BAD_REASONS:
        # audio_undecodable comes twice over: a file cut in half and bytes that are no audio at all
        for k in range(per_reason * (2 if reason == "audio_undecodable" else 1)):
            rng = random.Random(f"{seed}:bad:{reason}:{k}")
            spoken = source.utterance(rng)
            while len(spoken.split()) < 4:
                spoken = source.utterance(rng)
            text = ru_text.to_transcript(spoken)
            base = Job(_rel(dataset, seed, f"bad:{reason}:{k}"), spoken, text.encode(), _voice(rng, variants),
                       rng.getrandbits(63), min_seconds=1.0, bad_reason=reason)
            jobs.append(_make_bad(base, reason, text, rng, source, k))
    return jobs


def _make_bad(job: Job, reason: str, text: str, rng: random.Random, source: ru_text.TextSource, k: int) -> Job:
    if reason == "audio_missing":
        return replace(job, render=False, damage="absent")
    if reason == "audio_empty":
        return replace(job, render=False, damage="zero")
    if reason == "audio_undecodable":
        return replace(job, damage="truncate" if k % 2 == 0 else "garbage")
    if reason == "transcript_missing":
        return replace(job, transcript=None)
    if reason == "transcript_empty":
        return replace(job, transcript=rng.choice((b"", b"\n", b"  \n")))
    if reason == "transcript_not_utf8":
        return replace(job, transcript=text.encode("cp1251"))
    if reason == "digits":
        n = rng.randint(2, 2030)
        return replace(job, spoken=f"{job.spoken} {n}", transcript=f"{text} {n}".encode())
    if reason == "latin":
        word = rng.choice(("wifi", "email", "ok", "online", "iphone", "google"))
        return replace(job, spoken=f"{job.spoken} {word}", transcript=f"{text} {word}".encode())
    if reason == "out_of_alphabet":
        sym = rng.choice(("№", "€", "$", "°", "+", "=", "½", "α", "ї"))
        return replace(job, transcript=f"{text} {sym} {text.split()[-1]}".encode())
    if reason == "duration_too_short":
        word = rng.choice(("да", "нет", "ну", "вот"))
        return replace(job, spoken=word, transcript=word.encode(), min_seconds=0.0, max_seconds=0.15)
    if reason == "duration_too_long":  # ~40 s of speech with pauses: past every sane length limit
        spoken = " ".join(source.utterance(rng) for _ in range(18))
        return replace(job, spoken=spoken, transcript=ru_text.to_transcript(spoken).encode(), min_seconds=40.0,
                       voice=replace(job.voice, rate=150))
    if reason == "speaking_rate":  # the seed's rule: 10+ words in a 1-second clip
        words = " ".join(rng.choice(("я", "он", "мы", "да", "нет", "вот", "так", "там", "тут", "уже", "ещё", "же"))
                         for _ in range(12))
        return replace(job, spoken=text.split()[0], transcript=words.encode(), min_seconds=1.0, max_seconds=1.0)
    raise ValueError(reason)


def _damage(path: Path, damage: str) -> None:
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(len(path.name)).bytes(3000))
    elif damage == "zero":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    elif damage == "absent":
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------- render

_ENGINE: espeak_tts.Espeak | None = None
_LEVEL: float | None = None
RENDER_RETRIES = 3
RENDER_CHUNK = 4  # jobs a worker renders in a row, in job order


def _init_worker(compression_level: float | None) -> None:
    global _ENGINE, _LEVEL
    _ENGINE = espeak_tts.Espeak()  # one engine per process: espeak-ng is not thread-safe
    _LEVEL = compression_level


def _render_all(out: Path, jobs: list[Job], workers: int, level: float | None, progress: bool,
                render=None) -> dict[str, float]:
    """Render every job in `workers` spawned processes (never in this one: espeak-ng's global state stays out of
    the caller). espeak-ng has been seen to crash (SIGSEGV) on rare occasions; a dead worker breaks the pool, and
    the utterances not yet rendered are rendered again in fresh workers (each job is seeded: the same text, voice
    and noise), up to RENDER_RETRIES times."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    tasks = [(str(out), job) for job in jobs]
    todo = {k: tasks[k:k + RENDER_CHUNK] for k in range(0, len(tasks), RENDER_CHUNK)}  # first job → its chunk
    durations: dict[str, float] = {}
    bar = tqdm(total=len(tasks), unit="utt", disable=not progress, desc="synthesise")
    try:
        for attempt in range(RENDER_RETRIES + 1):
            try:
                with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn"),
                                         initializer=_init_worker, initargs=(level,)) as pool:
                    futures = {pool.submit(_render_chunk, chunk, render): k for k, chunk in todo.items()}
                    for done in as_completed(futures):
                        for rel, seconds in done.result():
                            durations[rel] = seconds
                        bar.update(len(todo.pop(futures[done])))
                        bar.set_postfix(audio_h=f"{sum(durations.values()) / 3600:.2f}", refresh=False)
                return durations
            except BrokenProcessPool:
                left = sum(len(chunk) for chunk in todo.values())
                if attempt == RENDER_RETRIES:
                    raise RuntimeError(f"synthesis workers died {attempt + 1} times; {left} utterances were "
                                       f"not rendered") from None
                bar.write(f"synthesise: a worker process died (espeak-ng crashed); rendering the {left} "
                          f"unfinished utterances again in fresh workers", file=sys.stderr)
    finally:
        bar.close()
    raise AssertionError("unreachable")


def _render_chunk(chunk: list[tuple[str, Job]], render=None) -> list[tuple[str, float]]:
    return [(render or _render_task)(task) for task in chunk]


def _render_task(task: tuple[str, Job]) -> tuple[str, float]:
    import soundfile as sf

    out, job = Path(task[0]), task[1]
    audio_path, text_path = out / (job.rel + ".opus"), out / (job.rel + ".txt")
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    if job.transcript is not None:
        text_path.write_bytes(job.transcript)
    if not job.render:
        return job.rel, 3.0  # a plausible manifest duration for a file that is not there
    audio, sr = synthesize(job)
    kwargs = {} if _LEVEL is None else {"compression_level": _LEVEL}
    sf.write(audio_path, audio, sr, format="OGG", subtype="OPUS", **kwargs)
    return job.rel, sf.info(str(audio_path)).duration


def synthesize(job: Job) -> tuple[np.ndarray, int]:
    """The job's waveform: espeak at 22050 Hz → soxr → silence pads, gain, noise; (samples[, 2]) float32, rate."""
    import soxr

    rng = np.random.default_rng(job.seed)
    engine = _ENGINE or espeak_tts.Espeak()
    speech = engine.synth(job.spoken, job.voice).astype(np.float32) / 32768.0
    sr = 48000 if job.hifi else SAMPLE_RATE
    speech = soxr.resample(speech, engine.sample_rate, sr)
    lead, tail = rng.uniform(0.05, 0.3, size=2)
    total = max(len(speech) + int((lead + tail) * sr), int(job.min_seconds * sr))
    extra = total - len(speech)
    start = int(extra * lead / (lead + tail))
    x = np.zeros(total, np.float32)
    x[start:start + len(speech)] = speech
    if np.isfinite(job.max_seconds):
        x = x[: int(job.max_seconds * sr)]
    peak = float(np.abs(x).max()) or 1.0
    x *= rng.uniform(0.25, 0.95) / peak
    if job.snr_db is not None:
        voiced = x[start:start + len(speech)]
        x += _noise(rng, len(x), float(np.mean(voiced ** 2)) if len(voiced) else 1e-4, job.snr_db)
    if job.hifi:  # a second channel a few samples late and a little quieter, like a close stereo pair
        delay = int(rng.integers(1, 24))
        x = np.stack([x, np.concatenate([np.zeros(delay, np.float32), x[:-delay]]) * rng.uniform(0.7, 1.0)], 1)
    return np.clip(x, -1.0, 1.0).astype(np.float32), sr


def _noise(rng: np.random.Generator, n: int, speech_power: float, snr_db: float) -> np.ndarray:
    """White, pink or brown noise at `snr_db` below the speech's power."""
    kind = rng.integers(3)
    white = rng.standard_normal(n)
    if kind:
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spectrum)), 1.0)
        spectrum /= f ** (0.5 * kind)  # 1/f power for pink, 1/f² for brown
        white = np.fft.irfft(spectrum, n)
    white /= np.sqrt(np.mean(white ** 2)) or 1.0
    return (white * np.sqrt(speech_power / 10 ** (snr_db / 10))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--utterances", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--dataset-name", default="public_synth")
    p.add_argument("--noise", action="store_true", help="additive noise on half the utterances")
    p.add_argument("--noise-fraction", type=float, default=None, help="share of utterances with noise")
    p.add_argument("--snr", default="10,35", help="SNR range in dB for the noise (default 10,35)")
    p.add_argument("--bad", action="store_true", help="add the broken inputs listed in bad_cases.json")
    p.add_argument("--bad-per-reason", type=int, default=1)
    p.add_argument("--hifi-fraction", type=float, default=0.0, help="share written as 48 kHz stereo")
    p.add_argument("--compression-level", type=float, default=None,
                   help="libsndfile Opus level 0..1 (default: libsndfile's; 0.8 ≈ 57 kbps encodes 2× faster)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    noise = args.noise_fraction if args.noise_fraction is not None else (0.5 if args.noise else 0.0)
    lo, hi = (float(v) for v in args.snr.split(","))
    summary = make_corpus(args.out, args.utterances, seed=args.seed, workers=args.workers,
                          dataset_name=args.dataset_name, noise_fraction=noise, snr_db=(lo, hi), bad=args.bad,
                          bad_per_reason=args.bad_per_reason, hifi_fraction=args.hifi_fraction,
                          compression_level=args.compression_level, overwrite=args.overwrite)
    d = summary.as_dict()
    print(f"{d['utterances']} utterances + {sum(d['bad_cases'].values())} bad cases, "
          f"{d['seconds'] / 3600:.2f} h of audio in {d['wall_seconds']:.1f} s with {d['workers']} workers: "
          f"{d['utterances_per_second']:.1f} utterances/s, {d['realtime_factor']:.0f}× realtime")
    print(f"manifest {d['manifest']}; voices: {len(d['voices'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
