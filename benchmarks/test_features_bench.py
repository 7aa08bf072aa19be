"""Log-mel of one batch: fastasr.model.features.LogMel (torch) beside per-utterance librosa in the same run.

The batch: the 64 utterances of 2–10 s of test_kernels_bench (16 kHz float32), zero-padded to the longest.
- librosa: for each utterance librosa.feature.melspectrogram (n_fft 512, win 400, hop 160, 80 mels, centred, zero
  padding, power 2) + log with the 1e-10 floor. (LogMel also does the per-utterance normalisation and masking, so
  the comparison favours librosa slightly.)
- torch CPU on the padded batch (which spends time on the padding: the padded-frame share is in extra_info), and on
  the same utterances bucketed into 4 length-sorted batches of 16 as the loader delivers them.
- GPU (skipped without CUDA): LogMel on the padded batch already on the device, torch.cuda.synchronize() inside.
extra_info: hours of audio per second (median), x_librosa / x_librosa_min (speed-up over the librosa loop in
this run, by median and by min).
Run: pytest benchmarks/test_features_bench.py --benchmark-enable
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kernels_bench import SR, UTTS  # noqa: E402

from fastasr.model.features import LogMel, SpecAugment  # noqa: E402

librosa = pytest.importorskip("librosa")

ROUNDS = 5
SECONDS = sum(u.size for u in UTTS) / SR
_means: dict = {}


def pad(utts):
    lens = torch.tensor([u.size for u in utts], dtype=torch.int64)
    audio = torch.zeros(len(utts), int(lens.max()))
    for b, u in enumerate(utts):
        audio[b, : u.size] = torch.from_numpy(u)
    return audio, lens


AUDIO, LENS = pad(UTTS)
_SORTED = sorted(UTTS, key=len)
BUCKETS = [pad(_SORTED[i : i + 16]) for i in range(0, len(_SORTED), 16)]
PADDED_SHARE = 1 - float(LENS.sum()) / AUDIO.numel()
BUCKETED_PADDED_SHARE = 1 - float(LENS.sum()) / sum(a.numel() for a, _ in BUCKETS)


def librosa_loop():
    out = []
    for u in UTTS:
        mel = librosa.feature.melspectrogram(
            y=u, sr=SR, n_fft=512, hop_length=160, win_length=400, window="hann", center=True,
            pad_mode="constant", power=2.0, n_mels=80,
        )
        out.append(np.log(np.maximum(mel, 1e-10)))
    return out


_LOGMEL = LogMel()


@torch.inference_mode()
def torch_cpu_padded():
    return _LOGMEL(AUDIO, LENS)


@torch.inference_mode()
def torch_cpu_bucketed():
    return [_LOGMEL(a, n) for a, n in BUCKETS]


IMPLS = {
    "librosa_loop": (librosa_loop, {}),
    "torch_cpu_padded": (torch_cpu_padded, {"padded_share": round(PADDED_SHARE, 3)}),
    "torch_cpu_bucketed": (torch_cpu_bucketed, {"padded_share": round(BUCKETED_PADDED_SHARE, 3)}),
}


def _record(benchmark, key, base_key, base_name):
    stats = benchmark.stats.stats
    _means[key] = stats
    benchmark.extra_info["audio_seconds"] = round(SECONDS, 1)
    benchmark.extra_info["hours_audio_per_s"] = round(SECONDS / 3600 / stats.median, 2)
    if base_key in _means:  # by median, and by min (the contention-proof figure on a shared machine)
        benchmark.extra_info[f"x_{base_name}"] = round(_means[base_key].median / stats.median, 2)
        benchmark.extra_info[f"x_{base_name}_min"] = round(_means[base_key].min / stats.min, 2)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_logmel_cpu_64_utterances(benchmark, impl):
    fn, info = IMPLS[impl]
    fn()
    benchmark.group = f"log-mel, 64 utts 2-10 s, CPU ({torch.get_num_threads()} torch threads)"
    benchmark.extra_info.update(info)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, impl, "librosa_loop", "librosa")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["torch_cpu_padded", "cuda_padded", "cuda_padded_specaugment"])
def test_logmel_gpu_vs_cpu(benchmark, impl):
    dev = torch.device("cuda")
    module, aug = LogMel().to(dev), SpecAugment().train()
    audio, lens = AUDIO.to(dev), LENS.to(dev)

    @torch.inference_mode()
    def on_gpu():
        feats, feat_lens = module(audio, lens)
        if impl == "cuda_padded_specaugment":
            feats = aug(feats, feat_lens)
        torch.cuda.synchronize()
        return feats

    fn = torch_cpu_padded if impl == "torch_cpu_padded" else on_gpu
    fn()
    benchmark.group = "log-mel, 64 utts 2-10 s, GPU vs CPU (padded batch)"
    benchmark.extra_info["device"] = "cpu" if impl == "torch_cpu_padded" else torch.cuda.get_device_name()
    benchmark.pedantic(fn, rounds=ROUNDS * 4, iterations=1, warmup_rounds=2)
    _record(benchmark, ("gpu", impl), ("gpu", "torch_cpu_padded"), "torch_cpu")
