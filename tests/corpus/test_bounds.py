"""Corpus files that would make the shard writer read without end, block or allocate what they claim: each is a
rejected row with a reason, found before the file is read (fastasr.corpus.bounds)."""

import io
import os
import struct

import numpy as np
import pytest
import soundfile as sf
from bounds_helpers import long_flac, run_bounded
from corpus_helpers import build, write_utt

from fastasr.corpus.bounds import MAX_TRANSCRIPT_BYTES, max_audio_bytes
from fastasr.corpus.checks import Filters, Reject, Sample, check_row
from fastasr.corpus.rows import Row
from fastasr.shards.index import read_rejected_tsv
from fastasr.text.normalization import TextConfig

TEXT = "мама мыла раму"


def reasons(out) -> dict[str, tuple[str, str]]:
    return {s: (r, d) for s, r, d in read_rejected_tsv(out / "rejected.tsv")}


def wav_bytes(x: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def with_rate(wav: bytes, rate: int) -> bytes:
    """The same WAV with its header's sample rate (and byte rate) patched."""
    out = bytearray(wav)
    assert out[12:16] == b"fmt "
    channels, bits = struct.unpack_from("<H", out, 22)[0], struct.unpack_from("<H", out, 34)[0]
    struct.pack_into("<II", out, 24, rate, rate * channels * bits // 8)
    return bytes(out)


def test_devices_and_fifos_are_rejected_without_being_opened(tmp_path):
    """A link to /dev/zero is read until memory runs out and a FIFO blocks its reader: the build runs with its
    address space bounded and a timeout, so either regression fails here instead of hanging or swapping."""
    src = tmp_path / "c"
    write_utt(src, "ok.opus", TEXT)
    (src / "zero.wav").symlink_to("/dev/zero")
    (src / "zero.txt").write_text(TEXT)
    os.mkfifo(src / "fifo.flac")
    (src / "fifo.txt").write_text(TEXT)
    write_utt(src, "text_zero.opus", None)
    (src / "text_zero.txt").symlink_to("/dev/zero")
    write_utt(src, "text_fifo.opus", None)
    os.mkfifo(src / "text_fifo.txt")
    out = tmp_path / "out"
    result = run_bounded(
        "from corpus_helpers import build",
        f"r = build({str(src)!r}, {str(out)!r}); result = r.index['totals']",
        margin_mb=200, timeout=120)
    assert result["samples"] == 1 and result["rejected"] == 4
    got = reasons(out)
    assert got["zero.wav"][0] == "audio_unreadable" and "character device" in got["zero.wav"][1]
    assert got["fifo.flac"][0] == "audio_unreadable" and "FIFO" in got["fifo.flac"][1]
    assert got["text_zero.opus"][0] == "transcript_unreadable" and "character device" in got["text_zero.opus"][1]
    assert got["text_fifo.opus"][0] == "transcript_unreadable" and "FIFO" in got["text_fifo.opus"][1]


@pytest.mark.parametrize("verify", ["full", "header"])
def test_sparse_two_gigabyte_wavs_are_rejected_unread(tmp_path, verify):
    """Two sparse 2 GB files: one whose header claims 18 hours (too long), one whose header says one second
    (too large for any 30-s utterance). Reading either whole fails under the address-space limit."""
    src = tmp_path / "c"
    wav = wav_bytes(np.zeros(16000, np.int16))
    data = wav.index(b"data")
    claims = bytearray(wav[: data + 8])
    struct.pack_into("<I", claims, data + 4, 2**31 - 64)
    for name, head in (("claims.wav", bytes(claims)), ("short.wav", wav)):
        path = write_utt(src, name, TEXT, audio=head)
        os.truncate(path, 2**31)
    write_utt(src, "ok.wav", TEXT)
    out = tmp_path / "out"
    result = run_bounded(
        "from corpus_helpers import build\nfrom fastasr.corpus.checks import Filters",
        f"r = build({str(src)!r}, {str(out)!r}, filters=Filters(verify={verify!r})); result = r.index['totals']",
        margin_mb=200, timeout=120)
    assert result["samples"] == 1
    got = reasons(out)
    assert got["claims.wav"] == ("duration_too_long", f"{(2**31 - 64) / 32000:.3f} s")
    assert got["short.wav"][0] == "audio_too_large" and str(2**31) in got["short.wav"][1]
    assert 2**31 > max_audio_bytes(Filters().max_duration) > 30 * 192_000 * 8 * 4  # the cap sits between


def test_an_hour_long_file_is_too_long_without_a_decode(tmp_path, monkeypatch):
    """673 KB of FLAC can hold an hour: its header says so, and nothing is decoded (a whole file or a span)."""
    path = tmp_path / "hour.flac"
    path.write_bytes(long_flac(3600))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_decode)
    for row in (Row("hour.flac", str(path), text=TEXT), Row("hour.flac", str(path), text=TEXT, offset=1.0)):
        for verify in ("full", "header"):
            got = check_row(row, TextConfig(), Filters(verify=verify))
            assert isinstance(got, Reject) and got.reason == "duration_too_long", got
            assert got.detail.startswith("3600.000" if row.offset is None else "3599.000")


def test_header_duration_keeps_the_seed_rule_flag(tmp_path):
    path = write_utt(tmp_path, "a.wav", None, seconds=0.1)
    got = check_row(Row("a.wav", str(path), text=" ".join(["слово"] * 12)), TextConfig(), Filters())
    assert (got.reason, got.seed_rule) == ("duration_too_short", True)


@pytest.mark.parametrize("rate, ok", [(1, False), (999, False), (1000, True), (192_000, True), (400_000, False)])
def test_sample_rates_outside_the_plausible_range_are_rejected(tmp_path, rate, ok):
    sr = min(max(rate, 1000), 192_000)
    wav = with_rate(wav_bytes(np.zeros(sr, np.int16) + 100, sr), rate)  # one second at a plausible rate
    path = tmp_path / "a.wav"
    path.write_bytes(wav)
    assert sf.info(str(path)).samplerate == rate  # libsndfile believes the patched header
    filters = Filters(max_duration=1e6, min_cps=0)
    for row in (Row("a.wav", str(path), text="да"), Row("a.wav", str(path), text="да", offset=0.0, length=0.5)):
        got = check_row(row, TextConfig(), filters)
        if ok:
            assert isinstance(got, Sample) and got.sample_rate == rate
        else:
            assert isinstance(got, Reject) and got.reason == "sample_rate_out_of_range" and f"{rate} Hz" in got.detail


def test_non_finite_float_audio_is_rejected_under_full_verification(tmp_path):
    src = tmp_path / "c"
    x = (0.1 * np.sin(np.arange(24000) / 5)).astype(np.float32)
    write_utt(src, "clean.wav", TEXT, audio=wav_bytes(x, subtype="FLOAT"))
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        y = x.copy()
        y[20000] = bad
        write_utt(src, name, TEXT, audio=wav_bytes(y, subtype="FLOAT"))
    y = x.astype(np.float64)
    y[100] = np.nan
    write_utt(src, "nan64.wav", TEXT, audio=wav_bytes(y, subtype="DOUBLE"))
    (src / "nemo.jsonl").write_text('{"audio_filepath": "nan.wav", "text": "мама", "offset": 1.0, "duration": 0.4}\n'
                                    '{"audio_filepath": "clean.wav", "text": "мама", "offset": 1.0, "duration": 0.4}\n')
    assert np.isnan(sf.read(str(src / "nan.wav"), dtype="float32")[0]).any()  # what the loader would see

    build(src, tmp_path / "full")
    got = reasons(tmp_path / "full")
    assert {s: r for s, (r, _) in got.items()} == {"nan.wav": "audio_not_finite", "inf.wav": "audio_not_finite",
                                                    "nan64.wav": "audio_not_finite"}
    build(src, tmp_path / "header", filters=Filters(verify="header"))
    assert reasons(tmp_path / "header") == {}  # no decode, no NaN check: documented
    segments = build(src / "nemo.jsonl", tmp_path / "segments")
    assert segments.index["rejected"] == {"audio_not_finite": 1} and segments.index["totals"]["samples"] == 1


def test_transcripts_are_read_up_to_a_cap(tmp_path):
    audio = write_utt(tmp_path, "a.opus", None)
    txt = tmp_path / "a.txt"
    for size, want in ((MAX_TRANSCRIPT_BYTES, "speaking_rate"), (MAX_TRANSCRIPT_BYTES + 1, "transcript_too_long")):
        txt.write_bytes(b"a" * size)
        got = check_row(Row("a.opus", str(audio), text_path=str(txt)), TextConfig(keep_latin=True), Filters())
        assert got.reason == want


def test_good_files_pass_as_before(tmp_path):
    """Every format and rate the writer accepted before still gives the same sample, byte for byte."""
    for i, (ext, sr, channels) in enumerate([("opus", 48000, 2), ("wav", 8000, 1), ("flac", 44100, 6)]):
        path = write_utt(tmp_path, f"u{i}.{ext}", None, sr=sr, channels=channels, seconds=1.3)
        got = check_row(Row(path.name, str(path), text=TEXT), TextConfig(), Filters(verify="full"))
        assert isinstance(got, Sample) and got.audio == path.read_bytes() and abs(got.duration - 1.3) < 1e-3
        assert (got.sample_rate, got.channels) == (sr, channels)
