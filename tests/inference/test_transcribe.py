"""`fastasr transcribe`: any rate / channel count / container, the loader's audio path, one line per file."""

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from asr_helpers import tiny_model

from fastasr.cli import main
from fastasr.inference.transcribe import UnreadableAudio, read_audio, split_long, transcribe
from fastasr.text.normalization import DEFAULT_TEXT
from fastasr.training.checkpoints import save_atomic
from fastasr.training.config import preset


def write(path, seconds, sr, channels, fmt, subtype):
    t = np.arange(int(seconds * sr)) / sr
    x = np.stack([0.4 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(channels)], axis=1)
    sf.write(str(path), x.astype(np.float32), sr, format=fmt, subtype=subtype)
    return path


def checkpoint(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.joiner.out.bias[1:] += 1.0  # make it say something
    config = replace(preset("tiny"), model=model.config)
    path = tmp_path / "model.pt"
    save_atomic({"config": config.to_dict(), "alphabet": DEFAULT_TEXT.alphabet, "model": model.state_dict()}, path)
    return path


def test_read_audio_48k_stereo_matches_loader_path(tmp_path):
    from fastasr.kernels import normalize_preemphasize

    path = write(tmp_path / "a.wav", 1.0, 48000, 2, "WAV", "PCM_16")
    got = read_audio(path)
    raw, sr = sf.read(str(path), dtype="float32", always_2d=True)
    want = normalize_preemphasize(soxr.resample(raw.mean(axis=1), sr, 16000).astype(np.float32))
    assert got.dtype == np.float32 and got.ndim == 1 and abs(len(got) - 16000) <= 1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_transcribe_formats_rates_channels(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    files = [write(tmp_path / "stereo48k.wav", 0.8, 48000, 2, "WAV", "PCM_16"),
             write(tmp_path / "mono8k.flac", 0.5, 8000, 1, "FLAC", "PCM_16"),
             write(tmp_path / "stereo48k.opus", 1.2, 48000, 2, "OGG", "OPUS"),
             write(tmp_path / "six22k.wav", 0.6, 22050, 6, "WAV", "FLOAT")]
    results = transcribe(ckpt, [str(f) for f in files], device="cpu")
    assert [p for p, _ in results] == [str(f) for f in files]
    assert all(set(text) <= set(DEFAULT_TEXT.alphabet) for _, text in results)
    # Batched (all files together) and one at a time agree.
    assert results == [transcribe(ckpt, [str(f)], device="cpu")[0] for f in files]
    assert main(["transcribe", "--checkpoint", str(ckpt), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{p}\t{t}" for p, t in results]
    assert main(["transcribe", "--checkpoint", str(ckpt), "--beam", "3", str(files[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}\t")


def test_split_long_is_lossless_and_cuts_in_pauses():
    rng = np.random.default_rng(0)
    sr = 16000
    x = (0.3 * rng.standard_normal(70 * sr)).astype(np.float32)
    gaps = [(22.0, 22.3), (47.0, 47.3)]
    for a, b in gaps:
        x[int(a * sr):int(b * sr)] = 0.0
    pieces = split_long(x, 30 * sr)
    np.testing.assert_array_equal(np.concatenate(pieces), x)
    assert all(p.size <= 30 * sr for p in pieces) and len(pieces) == 3
    cuts = np.cumsum([p.size for p in pieces])[:-1] / sr
    for cut, (a, b) in zip(cuts, gaps):
        assert a <= cut < b, (cut, a, b)
    # No pause anywhere: still cut, never longer than asked; a short signal stays whole.
    noise = (0.3 * rng.standard_normal(65 * sr)).astype(np.float32)
    assert all(p.size <= 30 * sr for p in split_long(noise, 30 * sr)) and len(split_long(noise, 30 * sr)) == 3
    assert len(split_long(x[: 5 * sr], 30 * sr)) == 1


def test_long_recording_is_the_join_of_its_pieces(tmp_path):
    """A recording cut into pieces reads as the pieces transcribed one by one (each normalised on its own)."""
    ckpt = checkpoint(tmp_path)
    rng = np.random.default_rng(1)
    sr = 16000
    x = (0.2 * rng.standard_normal(7 * sr)).astype(np.float32)
    x[int(2.5 * sr):int(2.7 * sr)] = 0.0
    long = tmp_path / "long.wav"
    sf.write(str(long), x, sr, subtype="FLOAT")
    pieces = split_long(x, 3 * sr)
    assert len(pieces) >= 3
    files = []
    for k, p in enumerate(pieces):
        files.append(tmp_path / f"piece{k}.wav")
        sf.write(str(files[-1]), p, sr, subtype="FLOAT")
    alone = [t for _, t in transcribe(ckpt, files, device="cpu", max_piece_seconds=3.0)]
    [(_, whole)] = transcribe(ckpt, [long], device="cpu", max_piece_seconds=3.0)
    assert whole == " ".join(t for t in alone if t) and whole


def test_length_sorted_batches_keep_input_order(tmp_path):
    ckpt = checkpoint(tmp_path)
    files = [write(tmp_path / f"f{i}.wav", d, 16000, 1, "WAV", "FLOAT") for i, d in enumerate([2.0, 0.3, 1.1, 0.6])]
    one_batch = transcribe(ckpt, files, device="cpu")
    many = transcribe(ckpt, files, device="cpu", batch_seconds=1.0)  # about one file per batch
    assert [p for p, _ in many] == [str(f) for f in files]
    assert many == one_batch == [transcribe(ckpt, [f], device="cpu")[0] for f in files]


def test_unreadable_files_are_named_and_the_rest_goes_on(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    good = [write(tmp_path / "a.wav", 0.8, 16000, 1, "WAV", "PCM_16"),
            write(tmp_path / "b.flac", 0.5, 8000, 1, "FLAC", "PCM_16")]
    garbage = tmp_path / "garbage.opus"
    garbage.write_bytes(b"\x00not audio" * 40)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    missing = tmp_path / "missing.wav"
    args = [good[0], garbage, missing, good[1], empty]
    with pytest.raises(UnreadableAudio, match="garbage.opus"):
        transcribe(ckpt, args, device="cpu")
    assert main(["transcribe", "--checkpoint", str(ckpt), *map(str, args)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{p}\t{t}" for p, t in transcribe(ckpt, good, device="cpu")]
    for bad in (garbage, missing, empty):
        assert str(bad) in err
    assert "3 of 5 files could not be read" in err


def patched_rate(path, rate):
    """A 16-bit mono WAV whose header claims `rate` Hz for the samples it holds."""
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"fmt "
    data[24:32] = rate.to_bytes(4, "little") + (2 * rate).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_implausible_sample_rates_are_refused_before_decoding(tmp_path, capsys):
    """A 32 KB WAV whose header says 1 Hz claims 4.4 hours, ~1 GB once resampled to 16 kHz: the read runs under an
    address-space limit, so allocating what the header claims fails there."""
    from bounds_helpers import run_bounded

    one_hz = patched_rate(write(tmp_path / "one_hz.wav", 1.0, 16000, 1, "WAV", "PCM_16"), 1)
    fast = patched_rate(write(tmp_path / "fast.wav", 1.0, 16000, 1, "WAV", "PCM_16"), 400_000)
    assert sf.info(str(one_hz)).samplerate == 1 and sf.info(str(fast)).samplerate == 400_000
    result = run_bounded("from fastasr.audio.files import read_mono, UnreadableAudio",
                         "result = []\n"
                         f"for p in ({str(one_hz)!r}, {str(fast)!r}):\n"
                         "    try: read_mono(p)\n"
                         "    except UnreadableAudio as exc: result.append(str(exc))",
                         margin_mb=150, timeout=60)
    assert result == [f"{one_hz}: sample rate 1 Hz, outside 1000-192000 Hz",
                      f"{fast}: sample rate 400000 Hz, outside 1000-192000 Hz"]
    ckpt = checkpoint(tmp_path)
    good = write(tmp_path / "a.wav", 0.8, 16000, 1, "WAV", "PCM_16")
    assert main(["transcribe", "--checkpoint", str(ckpt), str(one_hz), str(good)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{p}\t{t}" for p, t in transcribe(ckpt, [good], device="cpu")]
    assert "one_hz.wav: sample rate 1 Hz" in err


def test_devices_and_fifos_are_unreadable_files(tmp_path):
    import os

    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.wav")
    for name in ("zero.wav", "fifo.wav"):
        with pytest.raises(UnreadableAudio, match="not a regular file"):
            read_audio(tmp_path / name)


@pytest.mark.parametrize("sr, channels, subtype", [(48000, 2, "PCM_16"), (44100, 1, "FLOAT"), (22050, 6, "PCM_24"),
                                                   (8000, 1, "PCM_16"), (16000, 3, "PCM_16")])
def test_block_decode_equals_the_one_shot_resample(tmp_path, monkeypatch, sr, channels, subtype):
    """Decoded and resampled in many blocks (soxr's stream), the samples are those of decoding the whole file and
    resampling it at once (the loader's mono_16k)."""
    import fastasr.audio.files as files

    rng = np.random.default_rng(sr + channels)
    x = (0.3 * rng.standard_normal((int(3.7 * sr), channels))).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(str(path), x, sr, subtype=subtype)
    whole, rate = sf.read(str(path), dtype="float32", always_2d=True)
    want = files.mono_16k(whole, rate)
    monkeypatch.setattr(files, "READ_BLOCK_SAMPLES", 10_007 * channels)  # ~10 blocks, none aligned to anything
    got = files.read_mono(path)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_long_file_memory_follows_the_block_not_the_file(tmp_path):
    """Ten minutes of 48-kHz stereo decode to 230 MB of float32 at once; read a block at a time, only the 38 MB of
    16-kHz mono (and one block) are held."""
    from bounds_helpers import run_bounded

    path = tmp_path / "long.flac"
    minute = np.zeros((48000 * 60, 2), np.int16)
    minute[::97] = 1000
    with sf.SoundFile(str(path), "w", 48000, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(10):
            f.write(minute)
    short = tmp_path / "short.flac"
    sf.write(str(short), minute[:48000], 48000, subtype="PCM_16")
    result = run_bounded(f"from fastasr.audio.files import read_mono\nread_mono({str(short)!r})",
                         f"x = read_mono({str(path)!r}); result = [x.size, x.dtype.name]",
                         margin_mb=140, timeout=120)
    assert result == [16000 * 600, "float32"]
