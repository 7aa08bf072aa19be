"""A streaming model's global feature statistics (fastasr.training.setup.measure_feature_stats): measured when a run
starts, equal to a NumPy float64 computation of the same front end over the same utterances, saved in the
checkpoint, applied by the encoder (so SpecAugment's masks are the mean, which the encoder reads as zero)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from asr_helpers import make_config, make_shards

from fastasr.audio.fbank import FbankSettings, kaldi_fbank
from fastasr.model.features import SpecAugment
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.loop import train
from fastasr.training.setup import STATS_UTTERANCES, spread_subset


def test_statistics_are_the_fbank_mean_and_std(tmp_path):
    data = tmp_path / "shards"
    make_shards(data)
    config = make_config(max_steps=1)
    config = replace(config, model=replace(config.model, streaming=True, frontend="kaldi", chunk_frames="1,2,-1",
                                           left_chunks=2))
    train(data, tmp_path / "run", config)
    saved = ckpt_io.load(tmp_path / "run" / "last.pt")["model"]
    frames = []
    for batch in spread_subset(data, "train", STATS_UTTERANCES, config):
        for b in range(len(batch.keys)):
            x = batch.audio[b, :int(batch.audio_lens[b])].numpy().astype(np.float64)
            frames.append(kaldi_fbank(x, FbankSettings.sherpa_nemo_online(config.model.n_mels)).astype(np.float64))
    f = np.concatenate(frames)
    np.testing.assert_allclose(saved["encoder.feat_mean"].numpy(), f.mean(0), rtol=0, atol=2e-4)
    np.testing.assert_allclose(saved["encoder.feat_std"].numpy(), f.std(0), rtol=1e-3, atol=2e-4)
    assert float(saved["encoder.feat_mean"].mean()) < -3  # raw log-mel: far from zero, hence the statistics


def test_masks_take_the_given_fill():
    torch.manual_seed(0)
    feats = torch.randn(2, 50, 8) - 10.0
    fill = torch.arange(8.0) - 12.0
    out = SpecAugment(freq_masks=2, freq_width=3, time_masks=2, time_width=0.2).train()(feats, torch.tensor([50, 30]),
                                                                                        fill)
    changed = out != feats
    assert changed.any()
    assert torch.equal(out[changed], fill.expand_as(out)[changed])
