"""The kaldi front end frame by frame (fastasr.audio.fbank_stream) equals kaldi_fbank on the whole signal, for any
chunking, short signals included; the torch front end of a streaming model computes the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastasr.audio.fbank import FbankSettings, kaldi_fbank
from fastasr.audio.fbank_stream import FbankStream

SETTINGS = FbankSettings.sherpa_nemo(80, normalize=False)


def speechy(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.02 * rng.standard_normal(n)
            ).astype(np.float32)


def streamed(x: np.ndarray, sizes, settings: FbankSettings = SETTINGS) -> tuple[np.ndarray, list[int]]:
    stream, parts, at = FbankStream(settings), [], 0
    for size in sizes:
        parts.append(stream.accept(x[at:at + size]))
        at += size
    assert at >= x.size
    parts.append(stream.finish())
    return np.concatenate(parts), [p.shape[0] for p in parts]


@pytest.mark.parametrize("n", [1, 79, 119, 120, 281, 400, 1601, 16000, 23457])
@pytest.mark.parametrize("chunk", [1, 160, 1000, 4096])
def test_any_chunking_gives_the_whole_signal_s_frames(n, chunk):
    x = speechy(n, n)
    want = kaldi_fbank(x, SETTINGS)
    got, _ = streamed(x, [chunk] * (-(-n // chunk)))
    assert got.shape == want.shape
    assert np.abs(got - want).max(initial=0.0) <= 1e-6


def test_frames_come_out_as_soon_as_their_window_is_in_and_memory_stays_bounded():
    x = speechy(48000, 3)
    stream, emitted = FbankStream(SETTINGS), 0
    for at in range(0, x.size, 800):  # 50-ms chunks
        emitted += stream.accept(x[at:at + 800]).shape[0]
        # frame f ends at sample 160 f + 280: every frame whose window is in is out, none later
        assert emitted == max(0, (stream.received - 280) // 160 + 1)
        assert stream.buffer.size <= 400 + 800
    assert emitted + stream.finish().shape[0] == kaldi_fbank(x, SETTINGS).shape[0]


def test_a_stream_refuses_per_utterance_normalisation_and_use_after_finish():
    with pytest.raises(ValueError, match="cannot be normalised per utterance"):
        FbankStream(FbankSettings.sherpa_nemo(80))
    stream = FbankStream(SETTINGS)
    stream.finish()
    with pytest.raises(ValueError, match="finished"):
        stream.accept(np.zeros(10, np.float32))


def test_the_streaming_model_front_end_is_these_frames():
    """A model.streaming=true model's front end (log_mel) is sherpa-onnx's online NeMo fbank, streamed."""
    from fastasr.model.config import ModelConfig
    from fastasr.model.transducer import log_mel

    frontend = log_mel(ModelConfig(streaming=True, vocab_size=34))
    assert frontend.fbank == FbankSettings.sherpa_nemo_online(80)
    x = speechy(12345, 9)
    feats, lens = frontend(torch.from_numpy(x)[None].double(), torch.tensor([x.size]))
    got, _ = streamed(x, [2000] * 7, frontend.fbank)
    assert int(lens[0]) == got.shape[0] and np.abs(feats[0].numpy() - got).max() <= 1e-5


def test_online_settings_are_knf_online_fbank_as_sherpa_sets_it_up():
    """sherpa-onnx 2.0.1's OnlineRecognizer for a NeMo transducer (online-recognizer-transducer-nemo-impl.h,
    PostInit): a Hann window, librosa's mel 0-8000 Hz, no DC removal, no dither, snip_edges false; knf's own
    OnlineFbank with those options, fed in pieces, against fastasr's frames of the same samples."""
    knf = pytest.importorskip("kaldi_native_fbank")
    x = speechy(16000 * 2 + 77, 3)
    o = knf.FbankOptions()
    o.frame_opts.dither, o.frame_opts.snip_edges, o.frame_opts.window_type = 0.0, False, "hann"
    o.frame_opts.remove_dc_offset, o.frame_opts.samp_freq = False, 16000
    o.mel_opts.num_bins, o.mel_opts.low_freq, o.mel_opts.high_freq, o.mel_opts.is_librosa = 80, 0, 8000, True
    online = knf.OnlineFbank(o)
    for i in range(0, x.size, 3000):
        online.accept_waveform(16000, x[i:i + 3000].tolist())
    online.input_finished()
    want = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    got, _ = streamed(x, [3000] * 11, FbankSettings.sherpa_nemo_online(80))
    assert got.shape == want.shape and np.abs(got - want).max() <= 2e-4  # knf's float32 (measured 5.6e-5)
