"""tools/synth_corpus.py: Open STT layout, decodable 16 kHz mono Opus, Open STT transcripts, the bad cases, seeds."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastasr.text.normalization import TextRejected, normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import espeak_tts  # noqa: E402
import ru_text  # noqa: E402
import synth_corpus  # noqa: E402
from synth_helpers import in_fresh_process, render_dying_once, synth_lengths, synthesize_all  # noqa: E402

N = 12
SEED = 5
PATH_RE = re.compile(r"public_synth/[0-9a-f]/[0-9a-f]{2}/[0-9a-f]{12}\.opus")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synth_corpus.make_corpus(out, N, seed=SEED, workers=2, noise_fraction=0.5, bad=True, progress=False)
    rows = list(csv.reader(open(out / "public_synth.csv", encoding="utf-8")))
    bad = json.loads((out / "bad_cases.json").read_text(encoding="utf-8"))
    return out, summary, rows, bad


def good_rows(corpus):
    out, _, rows, bad = corpus
    return [r for r in rows if r[0] not in bad]


def test_manifest_is_open_stt_csv(corpus):
    out, summary, rows, bad = corpus
    assert summary.utterances == N and len(rows) == N + len(synth_corpus.BAD_REASONS) + 1
    assert not (out / "public_synth.csv").read_text().startswith("public_synth.csv")
    for audio, text, duration in rows:  # headerless, exactly three columns
        assert PATH_RE.fullmatch(audio), audio
        assert text == audio[:-len(".opus")] + ".txt"
        float(duration)
    for audio, text, duration in good_rows(corpus):
        assert (out / audio).is_file() and (out / text).is_file()
        assert float(duration) == pytest.approx(sf.info(str(out / audio)).duration, abs=1e-3)


def test_audio_is_16k_mono_opus_of_plausible_length(corpus):
    out = corpus[0]
    for audio, _, duration in good_rows(corpus):
        info = sf.info(str(out / audio))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "OPUS", 16000, 1)
        assert 0.7 <= float(duration) <= 12.0
        x, _ = sf.read(str(out / audio), dtype="float32")
        assert np.sqrt(np.mean(x ** 2)) > 0.01  # not silence


def test_transcripts_follow_open_stt_conventions(corpus):
    out = corpus[0]
    for _, text_path, duration in good_rows(corpus):
        text = (out / text_path).read_text(encoding="utf-8")
        assert set(text) <= ru_text.ALPHABET, text
        assert text == text.strip() and "  " not in text
        assert normalize(text) == text.replace("ё", "е")
        cps = len(text.replace(" ", "")) / float(duration)
        assert 1.0 <= cps <= 25.0, (text, duration)  # the sharder's speaking-rate bounds


def _ogg_has_eos(data: bytes) -> bool:
    last = data.rfind(b"OggS")
    return last >= 0 and len(data) >= last + 27 and bool(data[last + 5] & 0x04) and \
        len(data) >= last + 27 + data[last + 26] + sum(data[last + 27:last + 27 + data[last + 26]])


def test_bad_cases_are_what_the_report_says(corpus):
    out, summary, rows, bad = corpus
    expected = {r: 2 if r == "audio_undecodable" else 1 for r in synth_corpus.BAD_REASONS}
    assert summary.bad_cases == expected
    assert {r: list(bad.values()).count(r) for r in expected} == expected
    manifest = {a: (t, float(d)) for a, t, d in rows}
    undecodable = []
    for audio, reason in bad.items():
        assert audio in manifest, audio
        a, t = out / audio, out / manifest[audio][0]
        if reason == "audio_missing":
            assert not a.exists() and t.exists()
            continue
        assert a.exists()
        if reason == "audio_empty":
            assert a.stat().st_size == 0
        elif reason == "audio_undecodable":
            data = a.read_bytes()
            assert not _ogg_has_eos(data)  # cut in half, or bytes that are not Ogg at all
            undecodable.append(data[:4] == b"OggS")
        elif reason == "transcript_missing":
            assert not t.exists()
        elif reason == "transcript_empty":
            assert t.read_bytes().strip() == b""
        elif reason == "transcript_not_utf8":
            with pytest.raises(UnicodeDecodeError):
                t.read_bytes().decode("utf-8")
            assert set(t.read_bytes().decode("cp1251")) <= ru_text.ALPHABET
        elif reason in ("digits", "latin", "out_of_alphabet"):
            with pytest.raises(TextRejected) as err:
                normalize(t.read_text(encoding="utf-8"))
            assert err.value.reason == reason
        else:
            text = normalize(t.read_text(encoding="utf-8"))
            duration = sf.info(str(a)).duration
            assert duration == pytest.approx(manifest[audio][1], abs=1e-3)
            if reason == "duration_too_short":
                assert duration < 0.3
            elif reason == "duration_too_long":
                assert duration > 30.0
                assert 1.0 < len(text.replace(" ", "")) / duration < 25.0  # only its length is wrong
            elif reason == "speaking_rate":
                assert duration == pytest.approx(1.0, abs=0.05) and len(text.split()) >= 10
    assert sorted(undecodable) == [False, True]  # one truncated Ogg file, one of garbage bytes


def test_same_seed_same_corpus_whatever_size_and_workers(corpus, tmp_path):
    out = corpus[0]
    synth_corpus.make_corpus(tmp_path, 4, seed=SEED, workers=1, noise_fraction=0.5, progress=False)
    rows = list(csv.reader(open(tmp_path / "public_synth.csv", encoding="utf-8")))
    assert len(rows) == 4
    first = {a: d for a, _, d in corpus[2]}
    for audio, text, duration in rows:
        assert (tmp_path / text).read_bytes() == (out / text).read_bytes()
        assert duration == first[audio]
    other = synth_corpus.make_corpus(tmp_path / "other", 4, seed=SEED + 1, workers=1, progress=False)
    assert {Path(a).name for a, _, _ in rows}.isdisjoint(p.name for p in Path(other.out).rglob("*.opus"))


def test_existing_corpus_is_kept_unless_overwrite(tmp_path):
    synth_corpus.make_corpus(tmp_path, 1, seed=1, workers=1, progress=False)
    with pytest.raises(FileExistsError):
        synth_corpus.make_corpus(tmp_path, 1, seed=1, workers=1, progress=False)
    synth_corpus.make_corpus(tmp_path, 2, seed=1, workers=1, progress=False, overwrite=True)
    assert len((tmp_path / "public_synth.csv").read_text().splitlines()) == 2


def test_hifi_files_are_48k_stereo(tmp_path):
    summary = synth_corpus.make_corpus(tmp_path, 2, seed=2, workers=1, hifi_fraction=1.0, progress=False)
    assert summary.hifi == 2
    for audio, _, duration in csv.reader(open(tmp_path / "public_synth.csv")):
        info = sf.info(str(tmp_path / audio))
        assert (info.samplerate, info.channels) == (48000, 2)
        assert float(duration) == pytest.approx(info.duration, abs=1e-3)


def _job(text: str, **kw) -> synth_corpus.Job:
    voice = espeak_tts.VoiceSettings("ru", "m3", rate=170)
    return synth_corpus.Job("x", text, None, voice, seed=1, **kw)


def test_synthesised_audio_is_speech_like():
    (short, _), (long_, _), (noisy, _) = in_fresh_process(synthesize_all, [
        _job("Привет."),
        _job("Сегодня на улице очень холодно, поэтому я надел тёплую куртку и шапку."),
        _job("Привет.", snr_db=10.0),
    ])
    assert len(long_) > 3 * len(short)
    frames = long_[: len(long_) // 160 * 160].reshape(-1, 160)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    assert energy.max() > 0.05
    assert (energy < 0.1 * energy.max()).mean() > 0.05  # pauses and silences, not a constant tone
    assert (energy > 0.1 * energy.max()).mean() > 0.4  # mostly voiced
    assert np.sqrt(np.mean(noisy[:400] ** 2)) > np.sqrt(np.mean(short[:400] ** 2))  # noise fills the lead-in


def test_voices_exist():
    variants = espeak_tts.available_variants()
    assert len(variants) >= 20
    voices = [espeak_tts.VoiceSettings(language, variant) for language in sorted(set(espeak_tts.LANGUAGES))
              for variant in variants[::8]]
    assert all(n > 1000 for n in in_fresh_process(synth_lengths, "да", voices))


def test_text_source_is_varied_and_spelled_out():
    source = ru_text.TextSource()
    assert source.space_size() > 12  # log10 of the distinct sentences one draw can produce
    rng = random.Random(0)
    texts = [ru_text.to_transcript(source.utterance(rng), keep_yo=True) for _ in range(2000)]
    assert len(set(texts)) > 1200
    assert all(set(t) <= ru_text.ALPHABET and t for t in texts)
    words = [len(t.split()) for t in texts]
    assert 0.05 < np.mean([w <= 3 for w in words]) < 0.2 and np.mean([4 <= w <= 15 for w in words]) > 0.75
    assert ru_text.to_transcript("Кто-то купил две ёлки — «Ура!»") == "ктото купил две елки ура"
    with pytest.raises(ValueError):
        ru_text.to_transcript("купил 2 ёлки")
    kept = [ru_text.to_transcript(source.utterance(rng), keep_yo=rng.random() < synth_corpus.YO_KEEP)
            for _ in range(2000)]
    assert 0.08 < np.mean(["ё" in t for t in kept]) < 0.16  # Open STT keeps ё in ~12 % of utterances
    assert ru_text.plural(21, ("рубль", "рубля", "рублей")) == "рубль"
    assert ru_text.plural(12, ("рубль", "рубля", "рублей")) == "рублей"


def test_a_worker_that_dies_is_replaced_and_its_work_redone(tmp_path, capsys, monkeypatch):
    """espeak-ng has crashed a worker on rare occasions: the pool is rebuilt and the unfinished jobs rendered."""
    synth_corpus.make_corpus(tmp_path / "ref", 12, seed=SEED, workers=2, progress=False)
    want = {p.relative_to(tmp_path / "ref"): p.read_bytes() for p in (tmp_path / "ref").rglob("*.opus")}
    (tmp_path / "crash").mkdir()
    (tmp_path / "crash" / ".crash_target").write_text(str(sorted(want)[5]).removesuffix(".opus"))

    original = synth_corpus._render_all
    monkeypatch.setattr(synth_corpus, "_render_all",
                        lambda *a, **k: original(*a, **k, render=render_dying_once))
    synth_corpus.make_corpus(tmp_path / "crash", 12, seed=SEED, workers=2, progress=False)
    assert (tmp_path / "crash" / ".crashed_once").exists()
    got = {p.relative_to(tmp_path / "crash"): p.read_bytes() for p in (tmp_path / "crash").rglob("*.opus")}
    assert got.keys() == want.keys()
    for rel in got:  # re-rendered in a fresh worker: espeak-ng carries state between utterances, so bytes may differ
        assert sf.info(io.BytesIO(got[rel])).duration == pytest.approx(sf.info(io.BytesIO(want[rel])).duration, abs=0.1)
    assert "a worker process died" in capsys.readouterr().err
