"""fastasr.model.features against an independent NumPy/librosa float64 computation, utterance by utterance."""

import numpy as np
import pytest
import torch
from audio_helpers import FLOOR, HOP, LENGTHS, N_FFT, N_MELS, SR, reference_logmel, speech_like
from hypothesis import given, settings
from hypothesis import strategies as st
from optional import librosa

from fastasr.model.features import LogMel, SpecAugment, mel_filterbank

# librosa warns that n_fft exceeds the short utterances we feed it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:n_fft=.*is too large:UserWarning")

def padded_batch(lengths=LENGTHS, seed=0, garbage=0.0):
    rng = np.random.default_rng(seed)
    utts = [speech_like(rng, n) for n in lengths]
    audio = np.full((len(utts), max(lengths)), garbage, np.float32)
    for b, u in enumerate(utts):
        audio[b, : u.size] = u
    return utts, torch.from_numpy(audio), torch.tensor(lengths, dtype=torch.int64)


# ---- filterbank --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 80, 0.0, None), (16000, 400, 40, 20.0, 7600.0), (8000, 256, 64, 0.0, None)]
)
def test_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_module_buffer_is_librosa_default_filterbank():
    # librosa's defaults: Slaney mel scale (htk=False) and Slaney area normalisation (norm="slaney"), float32.
    fb = LogMel().mel_fb.numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS)
    np.testing.assert_allclose(fb, ref, rtol=1e-6, atol=1e-9)
    assert not np.allclose(fb, librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, htk=True), atol=1e-4)
    assert "mel_fb" not in LogMel().state_dict()  # derived from the config, not checkpointed


# ---- LogMel ------------------------------------------------------------------------------------------------------


def test_lengths_and_shapes():
    _, audio, lens = padded_batch()
    feats, feat_lens = LogMel()(audio, lens)
    assert feats.dtype == torch.float32 and feat_lens.dtype == torch.int64
    assert feats.shape == (len(LENGTHS), 1 + max(LENGTHS) // HOP, N_MELS)
    assert feat_lens.tolist() == [1 + n // HOP for n in LENGTHS]
    for n, t in zip(LENGTHS, feat_lens.tolist()):  # librosa's frame count for a centred STFT
        assert librosa.stft(np.zeros(n), n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="constant").shape[1] == t


def test_float64_equals_reference_tightly():
    utts, audio, lens = padded_batch()
    feats, feat_lens = LogMel()(audio.double(), lens)
    for b, u in enumerate(utts):
        ref = reference_logmel(u)
        np.testing.assert_allclose(feats[b, : feat_lens[b]].numpy(), ref, rtol=0, atol=1e-9)


def test_float32_batch_equals_each_utterance_alone():
    utts, audio, lens = padded_batch(garbage=0.5)  # whatever lies past a length must not matter
    feats, feat_lens = LogMel()(audio, lens)
    for b, u in enumerate(utts):
        t = int(feat_lens[b])
        ref = reference_logmel(u)
        np.testing.assert_allclose(feats[b, :t].numpy(), ref, rtol=0, atol=2e-4)  # measured <= 6e-5
        assert np.abs(feats[b, :t].numpy() - ref).mean() < 1e-5
        assert torch.all(feats[b, t:] == 0)  # padded frames are exactly zero
        alone, alone_len = LogMel()(torch.from_numpy(u)[None], lens[b : b + 1])
        assert int(alone_len) == t
        torch.testing.assert_close(feats[b, :t], alone[0], rtol=0, atol=2e-5)


def test_silence_and_no_normalisation():
    audio = torch.zeros(2, 3200)
    lens = torch.tensor([3200, 1000])
    feats, _ = LogMel()(audio, lens)
    assert torch.all(feats == 0) and torch.isfinite(feats).all()
    raw, raw_lens = LogMel(normalize=False)(audio, lens)
    assert torch.all(raw[0] == np.float32(np.log(FLOOR)))  # the floor, as log
    assert torch.all(raw[1, raw_lens[1] :] == 0)


def test_autocast_keeps_float32():
    utts, audio, lens = padded_batch(LENGTHS[:3])
    ref, _ = LogMel()(audio, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = LogMel()(audio, lens)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        LogMel()(torch.zeros(100), torch.tensor([100]))
    with pytest.raises(ValueError, match="audio_lens"):
        LogMel()(torch.zeros(2, 100), torch.tensor([100]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu_and_reference():
    utts, audio, lens = padded_batch()
    module = LogMel().cuda()
    feats, feat_lens = module(audio.cuda(), lens.cuda())
    assert feats.is_cuda and feat_lens.is_cuda
    cpu, cpu_lens = LogMel()(audio, lens)
    assert feat_lens.cpu().tolist() == cpu_lens.tolist()
    torch.testing.assert_close(feats.cpu(), cpu, rtol=0, atol=1e-3)
    for b, u in enumerate(utts):
        t = int(feat_lens[b])
        np.testing.assert_allclose(feats[b, :t].cpu().numpy(), reference_logmel(u), rtol=0, atol=1e-3)
        assert torch.all(feats[b, t:] == 0)


# ---- SpecAugment -------------------------------------------------------------------------------------------------


def marked_feats(lens, t_max, f=N_MELS, pad=7.0):
    """Features of ones on valid frames and `pad` on padding, so any change shows."""
    lens = torch.as_tensor(lens)
    feats = torch.full((lens.numel(), t_max, f), pad)
    feats[torch.arange(t_max)[None, :] < lens[:, None]] = 1.0
    return feats, lens


def test_identity_in_eval_mode():
    feats, lens = marked_feats([100, 50], 100)
    aug = SpecAugment().eval()
    assert aug(feats, lens) is feats


def test_masks_respect_lengths_and_bounds():
    torch.manual_seed(0)
    lens = torch.randint(0, 600, (64,))
    lens[0], lens[1] = 600, 0
    feats, lens = marked_feats(lens, 600)
    out = SpecAugment(freq_masks=2, freq_width=27, time_masks=10, time_width=0.05).train()(feats, lens)
    assert torch.all(out[feats == 7.0] == 7.0)  # padding untouched
    masked = out == 0
    for b, n in enumerate(lens.tolist()):
        m = masked[b, :n]  # (n, F)
        if n == 0:
            continue
        freq_cols = m.all(0)  # channels masked on every valid frame: the frequency masks
        time_rows = m.all(1)  # frames masked on every channel: the time masks
        assert torch.equal(m, freq_cols[None, :] | time_rows[:, None])  # nothing else masked
        assert int(freq_cols.sum()) <= 2 * 27
        assert int(time_rows.sum()) <= 10 * int(0.05 * n)


def test_single_masks_are_contiguous_and_within_width():
    torch.manual_seed(1)
    seen_f, seen_t = [], []
    for _ in range(10):
        feats, lens = marked_feats(torch.randint(1, 400, (32,)), 400)
        freq_only = SpecAugment(freq_masks=1, freq_width=27, time_masks=0).train()(feats, lens)
        time_only = SpecAugment(freq_masks=0, time_masks=1, time_width=0.1).train()(feats, lens)
        for b, n in enumerate(lens.tolist()):
            cols = torch.nonzero((freq_only[b, :n] == 0).all(0)).flatten()
            rows = torch.nonzero((time_only[b, :n] == 0).all(1)).flatten()
            assert int((freq_only[b, :n] == 0).sum()) == cols.numel() * n  # whole channels over valid frames
            assert int((time_only[b, :n] == 0).sum()) == rows.numel() * N_MELS  # whole frames
            for idx, seen, bound in ((cols, seen_f, 27), (rows, seen_t, int(0.1 * n))):
                if idx.numel():
                    assert int(idx[-1] - idx[0]) + 1 == idx.numel()  # one contiguous span
                assert idx.numel() <= bound
                seen.append((idx.numel(), bound))
    assert max(w for w, _ in seen_f) == 27  # the full width is reachable
    assert any(w == bound and bound > 0 for w, bound in seen_t)
    assert any(w == 0 for w, _ in seen_f)  # and so is zero


def test_reproducible_under_manual_seed():
    feats, lens = marked_feats([300, 200, 100], 300)
    aug = SpecAugment().train()
    torch.manual_seed(5)
    a = aug(feats, lens)
    torch.manual_seed(5)
    b = aug(feats, lens)
    c = aug(feats, lens)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_int_time_width_and_no_masks():
    feats, lens = marked_feats([300, 5], 300)
    torch.manual_seed(2)
    out = SpecAugment(freq_masks=0, time_masks=3, time_width=20).train()(feats, lens)
    assert int((out[0] == 0).all(1).sum()) <= 60
    assert torch.equal(SpecAugment(freq_masks=0, time_masks=0).train()(feats, lens), feats)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_specaugment_on_cuda():
    feats, lens = marked_feats([300, 120], 300)
    out = SpecAugment().train()(feats.cuda(), lens.cuda())
    assert out.is_cuda
    assert torch.all(out.cpu()[feats == 7.0] == 7.0)


@settings(max_examples=40, deadline=None)
@given(lens=st.lists(st.integers(0, 120), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_property_padding_never_touched(lens, seed):
    torch.manual_seed(seed)
    feats, lens_t = marked_feats(lens, max(max(lens), 1), f=20)
    out = SpecAugment(freq_masks=3, freq_width=8, time_masks=4, time_width=0.2, mask_value=-1.0).train()(feats, lens_t)
    assert torch.all(out[feats == 7.0] == 7.0)
    assert set(out.unique().tolist()) <= {1.0, -1.0, 7.0}
