"""fastasr.audio.mel.log_mel (NumPy, the runtime's front end) against librosa float64 and against torch's LogMel.

Tolerances: against an independent librosa float64 computation and LogMel in float64, 1e-6 absolute (log_mel
returns float32, whose rounding of values up to ~10 is ~5e-7); against LogMel in float32 — what a checkpoint's
model is fed — 5e-4 absolute on the normalised features (measured: ≤ 1e-4 on 10 s of speech-like audio).
"""

import numpy as np
import pytest
import torch
from audio_helpers import LENGTHS, reference_logmel, speech_like

from fastasr.audio.mel import MelSettings, log_mel
from fastasr.model.features import LogMel

F64_TOL = 1e-6
F32_TOL = 5e-4


def utterances(seed=0):
    rng = np.random.default_rng(seed)
    return [speech_like(rng, n) for n in [*LENGTHS, 160000]]


def test_equals_librosa_and_logmel_float64():
    settings, torch_mel = MelSettings(), LogMel()
    for u in utterances():
        ours = log_mel(u, settings)
        assert ours.dtype == np.float32 and ours.shape == (1 + u.size // 160, 80)
        np.testing.assert_allclose(ours, reference_logmel(u), rtol=0, atol=F64_TOL)
        ref, _ = torch_mel(torch.from_numpy(u).double()[None], torch.tensor([u.size]))
        np.testing.assert_allclose(ours, ref[0].numpy(), rtol=0, atol=F64_TOL)


def test_within_float32_rounding_of_what_the_model_is_fed():
    settings, torch_mel = MelSettings(), LogMel()
    utts = utterances(seed=1)
    lens = torch.tensor([u.size for u in utts])
    batch = torch.zeros(len(utts), int(lens.max()))
    for b, u in enumerate(utts):
        batch[b, :u.size] = torch.from_numpy(u)
    feats, feat_lens = torch_mel(batch, lens)  # float32, the padded batch as in training and transcription
    worst = 0.0
    for b, u in enumerate(utts):
        diff = np.abs(log_mel(u, settings) - feats[b, :feat_lens[b]].numpy())
        worst = max(worst, float(diff.max()))
    assert worst <= F32_TOL, worst


@pytest.mark.parametrize("kw", [dict(n_fft=400, win_length=400, n_mels=40, f_min=20.0, f_max=7600.0),
                                dict(n_fft=256, win_length=200, hop_length=80, n_mels=64, normalize=False)])
def test_other_settings_follow_logmel(kw):
    settings = MelSettings(**kw)
    torch_mel = LogMel(**kw)
    assert (torch_mel.f_min, torch_mel.f_max) == (settings.f_min, settings.f_max)
    u = utterances()[0]
    ref, _ = torch_mel(torch.from_numpy(u).double()[None], torch.tensor([u.size]))
    np.testing.assert_allclose(log_mel(u, settings), ref[0].numpy(), rtol=0, atol=F64_TOL)


def test_silence_is_finite_and_settings_are_checked():
    feats = log_mel(np.zeros(800, np.float32), MelSettings())
    assert np.isfinite(feats).all() and feats.shape == (6, 80)
    with pytest.raises(ValueError, match="even n_fft"):
        MelSettings(n_fft=401, win_length=400)
    with pytest.raises(ValueError, match="positive"):
        MelSettings(hop_length=0)
