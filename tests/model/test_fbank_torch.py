"""fastasr.model.fbank.KaldiFbank (torch, batched) against its NumPy twin fastasr.audio.fbank.kaldi_fbank.

The twin is proven against kaldi-native-fbank and sherpa-onnx in tests/audio/test_fbank.py; here the torch module
must compute the same per utterance, whatever else the batch holds. Tolerances, absolute:
- float64 against the twin: 2e-6 (the twin's float32 output rounds values up to ~17 by ≤ 1e-6; measured ≤ 5e-7);
- float32, what training computes, against the twin: 5e-4 (measured ≤ 4.3e-5 log-mel and normalised);
- batched (NaN padding) against one at a time: 1e-10 in float64; in float32 1e-5 on the log-mel (measured ≤ 1e-6)
  and 5e-4 normalised (measured ≤ 1.1e-4, an utterance of two frames whose std is small in some bins).
"""

import json

import numpy as np
import pytest
import torch
from audio_helpers import speech_like

from fastasr.audio.fbank import FbankSettings, kaldi_fbank
from fastasr.model.fbank import KaldiFbank

# empty, under one frame (79), one frame (80, 239), under one window (399), 0.77 s, 1 s, 7.3 s
LENGTHS = [0, 79, 80, 161, 239, 399, 400, 12345, 16000, 116800]
F64_TOL, F32_TOL = 2e-6, 5e-4
ALONE_TOL = {(torch.float64, True): 1e-10, (torch.float64, False): 1e-10,
             (torch.float32, True): 5e-4, (torch.float32, False): 1e-5}


def utterances(seed=0):
    rng = np.random.default_rng(seed)
    return [speech_like(rng, n) if n else np.zeros(0, np.float32) for n in LENGTHS]


def padded(utts, dtype, fill=float("nan")):
    """(B, S) batch whose padding is `fill` (NaN by default: any of it reaching a valid frame would show)."""
    lens = torch.tensor([u.size for u in utts])
    batch = torch.full((len(utts), int(lens.max())), fill, dtype=dtype)
    for b, u in enumerate(utts):
        batch[b, :u.size] = torch.from_numpy(u).to(dtype)
    return batch, lens


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_equals_numpy_twin_and_one_at_a_time(dtype, normalize):
    fe = KaldiFbank(normalize=normalize)
    utts = utterances()
    batch, lens = padded(utts, dtype)
    feats, feat_lens = fe(batch, lens)
    assert feats.dtype == dtype and feats.shape == (len(utts), (116800 + 80) // 160, 80)
    assert feat_lens.dtype == torch.int64 and feat_lens.tolist() == [(n + 80) // 160 for n in LENGTHS]
    for b, u in enumerate(utts):
        n = int(feat_lens[b])
        assert torch.count_nonzero(feats[b, n:]) == 0  # padded frames are zero
        ours = feats[b, :n].numpy()
        np.testing.assert_allclose(ours, kaldi_fbank(u, fe.fbank), rtol=0,
                                   atol=F64_TOL if dtype == torch.float64 else F32_TOL)
        alone, alone_lens = fe(torch.from_numpy(u).to(dtype)[None], torch.tensor([u.size]))
        assert alone_lens.tolist() == [n] and alone.shape == (1, n, 80)
        np.testing.assert_allclose(ours, alone[0].numpy(), rtol=0, atol=ALONE_TOL[dtype, normalize])


def test_padding_content_never_reaches_the_features():
    """Each utterance's mirrored edges come from its own samples: any padding gives the same bits."""
    fe = KaldiFbank()
    utts = utterances(seed=1)
    first, lens = padded(utts, torch.float32, fill=float("nan"))
    for fill in (0.0, 1e6):
        other, _ = padded(utts, torch.float32, fill=fill)
        assert torch.equal(fe(first, lens)[0], fe(other, lens)[0])
    noisy = first.clone()
    noisy[torch.isnan(noisy)] = torch.randn(int(torch.isnan(noisy).sum()))
    assert torch.equal(fe(first, lens)[0], fe(noisy, lens)[0])
    # wider than the longest utterance: as LogMel, the padded width's frames, the extra ones zero
    short, short_lens = padded([u for u in utts if u.size <= 16000], torch.float64)
    narrow, narrow_lens = fe(short, short_lens)
    wide, wide_lens = fe(torch.nn.functional.pad(short, (0, 1000), value=float("nan")), short_lens)
    assert wide.shape[1] == (16000 + 1000 + 80) // 160 > narrow.shape[1] and torch.equal(wide_lens, narrow_lens)
    torch.testing.assert_close(wide[:, :narrow.shape[1]], narrow, rtol=0, atol=1e-10)
    assert torch.count_nonzero(wide[:, narrow.shape[1]:]) == 0


def test_interface_settings_and_autocast():
    fe = KaldiFbank()
    assert (fe.sample_rate, fe.n_mels, fe.hop_length, fe.win_length, fe.n_fft) == (16000, 80, 160, 400, 512)
    assert fe.settings() == FbankSettings().to_dict() and json.loads(json.dumps(fe.settings())) == fe.settings()
    assert KaldiFbank(n_mels=64, normalize=False).settings()["log_guard"] == "max"  # sherpa without normalize_type
    assert fe.output_lengths(torch.tensor([0, 79, 80, 239, 240, 16000])).tolist() == [0, 0, 1, 1, 2, 100]
    assert not fe.state_dict()  # the constants follow from the settings
    batch, lens = padded(utterances()[5:8], torch.float32, fill=0.0)
    ref, _ = fe(batch, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # would run the matmul in bfloat16 if it were on
        feats, _ = fe(batch, lens)
        half, _ = fe(batch.bfloat16(), lens)
    assert torch.equal(feats, ref) and half.dtype == torch.float32


def test_empty_batches_and_bad_input():
    fe = KaldiFbank()
    feats, lens = fe(torch.zeros(3, 70), torch.tensor([70, 0, 5]))
    assert feats.shape == (3, 0, 80) and lens.tolist() == [0, 0, 0]
    assert fe(torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64))[0].shape == (0, 0, 80)
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        fe(torch.zeros(400), torch.tensor([400]))
    with pytest.raises(ValueError, match="audio_lens must be"):
        fe(torch.zeros(2, 400), torch.tensor([400]))
    with pytest.raises(ValueError, match=r"\[0, 400\]"):
        fe(torch.zeros(2, 400), torch.tensor([400, 401]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_numpy_twin():
    fe = KaldiFbank().cuda()
    utts = utterances(seed=2)
    batch, lens = padded(utts, torch.float32)
    feats, feat_lens = fe(batch.cuda(), lens.cuda())
    for b, u in enumerate(utts):
        got = feats[b, :int(feat_lens[b])].cpu().numpy()
        np.testing.assert_allclose(got, kaldi_fbank(u, fe.fbank), rtol=0, atol=F32_TOL)
    assert torch.count_nonzero(feats[0, int(feat_lens[0]):]) == 0
