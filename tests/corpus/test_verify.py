import pytest
from corpus_helpers import audio_bytes

from fastasr.corpus.verify import AudioRejected, verify


@pytest.mark.parametrize("ext", ["opus", "wav", "flac"])
@pytest.mark.parametrize("sr, channels", [(16000, 1), (48000, 2)])
def test_valid_audio_and_duration(ext, sr, channels):
    info = verify(audio_bytes(1.25, sr, channels, ext))
    assert (info.sample_rate, info.channels) == (sr, channels)
    assert info.frames == int(1.25 * sr) and info.duration == pytest.approx(1.25)


@pytest.mark.parametrize("ext", ["opus", "wav", "flac"])
@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_truncated_audio_is_rejected(ext, cut):
    data = audio_bytes(2.0, ext=ext)
    with pytest.raises(AudioRejected) as err:
        verify(data[: int(len(data) * cut)])
    assert err.value.reason == "audio_undecodable"


@pytest.mark.parametrize("ext", ["opus", "flac"])
def test_corrupted_middle_is_rejected(ext):
    data = bytearray(audio_bytes(2.0, ext=ext))
    mid = len(data) // 2
    data[mid : mid + 64] = b"\x55" * 64  # a corrupt Ogg page is dropped by libogg's CRC check; FLAC frames too
    with pytest.raises(AudioRejected):
        verify(bytes(data))


@pytest.mark.parametrize("data, reason", [(b"", "audio_empty"), (b"not audio at all" * 20, "audio_undecodable"),
                                          (b"OggS" + bytes(200), "audio_undecodable")])
def test_garbage(data, reason):
    with pytest.raises(AudioRejected) as err:
        verify(data)
    assert err.value.reason == reason


def test_header_mode_still_catches_truncation():
    data = audio_bytes(2.0)
    assert verify(data, "header").frames == 32000
    with pytest.raises(AudioRejected):
        verify(data[: len(data) // 2], "header")
