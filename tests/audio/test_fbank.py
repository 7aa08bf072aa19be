"""fastasr.audio.fbank.kaldi_fbank against what sherpa-onnx computes for a NeMo transducer.

Two references. kaldi-native-fbank's OnlineFbank, configured line by line as sherpa-onnx 2.0.1 configures it (its
sdist's sherpa-onnx/csrc/offline-stream.cc:53-75, after PostInit in offline-recognizer-transducer-nemo-impl.h:228-257,
with FeatureExtractorConfig's defaults in csrc/features.h and from_transducer's in python/.../offline_recognizer.py),
plus the per_feature normalisation written in NumPy float32 the way csrc/math.cc:134-152 writes it. And sherpa-onnx
itself (when installed): a pass-through NeMo "model" whose joiner reveals each feature through the log-probability
sherpa reports for the token it emits (see `feature_probe_model`).

Tolerances, absolute, on values up to ~17 (log-mel) or ~6 (normalised); knf computes in float32 (kiss_fft),
kaldi_fbank in float64, so the float32 FFT's rounding in low-energy bins sets the difference:
- log-mel before normalisation: 5e-4 (measured ≤ 1.3e-4 over 5 ms .. 7.3 s of speech-like audio, speech with
  digital silence and 3.2 s of espeak-ng Russian);
- normalised: 1e-3 (measured ≤ 6.3e-5; allowed more because dividing by a small std magnifies rounding, as in an
  utterance of two frames);
- through sherpa-onnx 2.0.1: 5e-4 (measured ≤ 1.3e-4 for kaldi_fbank; the knf + NumPy reference above is within
  1.7e-5 of sherpa's features, which is the probe's own precision: it is how sherpa computes them).
"""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from audio_helpers import espeak_russian, speech_like

from fastasr.audio.fbank import (FBANK_METHOD, FLT_EPSILON, NEMO_LOG_EPS, FbankSettings, kaldi_fbank, num_frames,
                                 reflect_index)

knf = pytest.importorskip("kaldi_native_fbank")

LOG_TOL, NORM_TOL, SHERPA_TOL = 5e-4, 1e-3, 5e-4
# speech-like lengths: one frame (80), within a frame (161, 239), under one window (399), 0.77 s, 1 s, 7.3 s
LENGTHS = [80, 161, 239, 399, 400, 12345, 16000, 116800]


def sherpa_knf_options(n_mels: int = 80, normalize: bool = True):
    """knf.FbankOptions as sherpa-onnx 2.0.1 builds them for a NeMo transducer (not GigaAM)."""
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0  # from_transducer(dither=0.0)
    o.frame_opts.snip_edges = False  # FeatureExtractorConfig default
    o.frame_opts.samp_freq = 16000
    o.frame_opts.frame_shift_ms = 10.0
    o.frame_opts.frame_length_ms = 25.0
    o.frame_opts.remove_dc_offset = False  # PostInit, NeMo branch
    o.frame_opts.window_type = "povey"  # FeatureExtractorConfig default
    # not forwarded by sherpa, so knf's defaults: preemph_coeff 0.97, round_to_power_of_two (512)
    o.mel_opts.num_bins = n_mels  # feat_dim from the encoder's metadata
    o.mel_opts.high_freq = -400.0  # FeatureExtractorConfig default: 7600 Hz
    o.mel_opts.low_freq = 0.0  # PostInit
    o.mel_opts.is_librosa = True  # PostInit; norm "slaney" and use_slaney_mel_scale are knf's defaults
    if normalize:  # offline-stream.cc:72-75: a model with a normalize_type gets NeMo's additive log guard
        o.use_log_floor = False
        o.eps = np.finfo(np.float32).eps / 2
    assert (o.frame_opts.preemph_coeff, o.frame_opts.round_to_power_of_two) == (np.float32(0.97), True)
    assert (o.mel_opts.norm, o.mel_opts.use_slaney_mel_scale, o.use_energy, o.use_power) == ("slaney", True, False,
                                                                                             True)
    return o


def knf_log_mel(x: np.ndarray, normalize: bool = True, n_mels: int = 80) -> np.ndarray:
    fbank = knf.OnlineFbank(sherpa_knf_options(n_mels, normalize))
    fbank.accept_waveform(16000, x)
    fbank.input_finished()
    rows = [np.asarray(fbank.get_frame(i), np.float32) for i in range(fbank.num_frames_ready)]
    return np.stack(rows) if rows else np.zeros((0, n_mels), np.float32)


def sherpa_per_feature(feats: np.ndarray) -> np.ndarray:
    """NemoNormalizePerFeature (math.cc): float32, population variance of centred values, 1e-5 added to the std."""
    x = feats.astype(np.float32)
    mean = x.mean(0, dtype=np.float32)
    var = np.square(x - mean).mean(0, dtype=np.float32)
    return (x - mean) * (np.float32(1) / (np.sqrt(var) + np.float32(1e-5)))


def sherpa_features(x: np.ndarray, normalize: bool = True) -> np.ndarray:
    feats = knf_log_mel(x, normalize)
    return sherpa_per_feature(feats) if normalize else feats


def with_silence(rng) -> np.ndarray:
    """Speech-like audio with digital silence inside: the log guard decides the silent frames' values."""
    x = speech_like(rng, 8000)
    return np.concatenate([np.zeros(2400, np.float32), x[:4000], np.zeros(4000, np.float32), x[4000:]])


@pytest.fixture(scope="module")
def espeak():
    pytest.importorskip("espeakng_loader")
    return espeak_russian()


def utterances(seed=0):
    rng = np.random.default_rng(seed)
    return [speech_like(rng, n) for n in LENGTHS] + [with_silence(rng)]


@pytest.mark.parametrize("normalize", [True, False])
def test_equals_knf_configured_as_sherpa(normalize):
    settings = FbankSettings.sherpa_nemo(normalize=normalize)
    for x in utterances():
        ours = kaldi_fbank(x, settings)
        assert ours.dtype == np.float32 and ours.shape == (num_frames(x.size, 160), 80) == ((x.size + 80) // 160, 80)
        unnormalised = kaldi_fbank(x, replace(settings, normalize=False))
        np.testing.assert_allclose(unnormalised, knf_log_mel(x, normalize), rtol=0, atol=LOG_TOL)
        np.testing.assert_allclose(ours, sherpa_features(x, normalize), rtol=0, atol=NORM_TOL)


def test_equals_knf_on_espeak_russian(espeak):
    assert espeak.size > 16000  # a few seconds of speech
    for normalize in (True, False):
        ours = kaldi_fbank(espeak, FbankSettings.sherpa_nemo(normalize=normalize))
        np.testing.assert_allclose(ours, sherpa_features(espeak, normalize), rtol=0, atol=NORM_TOL)


def test_log_guard_follows_the_normalisation():
    """sherpa's two guards differ on silence: log(0 + 2**-24) = -16.64 with a normalize_type, log(max(0,
    FLT_EPSILON)) = -15.94 without. Each setting matches knf there, and the other would not."""
    x = with_silence(np.random.default_rng(1))
    add, floor = FbankSettings(normalize=False), FbankSettings.sherpa_nemo(normalize=False)
    assert (add.log_guard, add.log_eps, floor.log_guard, floor.log_eps) == ("add", NEMO_LOG_EPS, "max", FLT_EPSILON)
    silent = slice(2, 13)  # frames 2..12 read only zeros (2400 leading zeros)
    np.testing.assert_allclose(kaldi_fbank(x, add)[silent], np.log(NEMO_LOG_EPS), atol=1e-6)
    np.testing.assert_allclose(kaldi_fbank(x, floor)[silent], np.log(FLT_EPSILON), atol=1e-6)
    np.testing.assert_allclose(knf_log_mel(x, normalize=True)[silent], np.log(NEMO_LOG_EPS), atol=1e-6)
    np.testing.assert_allclose(knf_log_mel(x, normalize=False)[silent], np.log(FLT_EPSILON), atol=1e-6)


def test_frame_count_and_mirrored_edges():
    """(N + 80) // 160 frames, as knf counts them, down to signals shorter than the 120 mirrored samples."""
    for n in [*range(1, 400, 13), 479, 480, 481, 12345]:
        assert num_frames(n, 160) == knf_log_mel(np.ones(n, np.float32), False).shape[0], n
    # knf's loop: -1 → 0, -2 → 1, n → n - 1, n + 1 → n - 2, again past the other end
    assert reflect_index(np.arange(-4, 9), 3).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2]
    x = speech_like(np.random.default_rng(2), 90)  # one frame reading samples -120..279 of 90
    np.testing.assert_allclose(kaldi_fbank(x, FbankSettings(normalize=False)), knf_log_mel(x), rtol=0, atol=LOG_TOL)
    assert kaldi_fbank(np.zeros(79, np.float32), FbankSettings()).shape == (0, 80)


def test_settings_round_trip_and_checks():
    s = FbankSettings()
    assert s == FbankSettings.sherpa_nemo() and (s.win_length, s.hop_length, s.n_fft, s.f_max) == (400, 160, 512, 7600)
    d = json.loads(json.dumps(s.to_dict()))
    assert FBANK_METHOD.items() <= d.items() and FbankSettings.from_dict(d) == s
    with pytest.raises(ValueError, match="snip_edges"):
        FbankSettings.from_dict({**d, "snip_edges": True})
    for bad, match in [(dict(n_fft=401), "even n_fft"), (dict(hop_length=0), "positive"),
                       (dict(f_max=9000.0), "f_max"), (dict(window="blackman"), "window"),
                       (dict(log_guard="clip"), "log_guard"), (dict(preemphasis=1.5), "preemphasis")]:
        with pytest.raises(ValueError, match=match):
            FbankSettings(**bad)
    with pytest.raises(ValueError, match="1-D"):
        kaldi_fbank(np.zeros((2, 400), np.float32), s)


def test_imports_no_torch():
    code = "import sys, fastasr.audio.fbank; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- sherpa-onnx itself --------------------------------------------------------------------------------------------

Q = 10  # features read per encoder frame: sherpa's NeMo greedy search emits at most 10 symbols per frame
SHIFT, SCALE = 25.0, 50.0  # feature f → blank logit (f - SHIFT) / SCALE in [-1, 0) for |f| < 25


def feature_probe_model(d, normalize_type: str, feat_dim: int = 80) -> None:
    """encoder/decoder/joiner.onnx + tokens.txt in `d`: a NeMo-transducer "model" that lets sherpa's features out.

    The encoder lays each feature frame out as feat_dim / Q encoder frames of Q values. The decoder turns the last
    token into a one-hot of the next value's index (token q → q + 1, token Q - 1 and blank → 0). The joiner gives
    that index's token logit 0, the other tokens -1e4 and blank (f - SHIFT) / SCALE < 0, so sherpa emits tokens
    0..Q-1 on every encoder frame with log-probability -log(1 + exp((f - SHIFT) / SCALE)): f, to float32 precision.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    def io(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    def save(nodes, name, inputs, outputs, consts, meta=None):
        graph = helper.make_graph(nodes, name, inputs, outputs, consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
        for k, v in (meta or {}).items():
            model.metadata_props.add(key=k, value=str(v))
        onnx.checker.check_model(model)
        onnx.save(model, str(d / f"{name}.onnx"))

    f32, i64, i32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
    chunks = feat_dim // Q
    save([helper.make_node("Reshape", ["audio_signal", "split"], ["r"]),  # (N, chunks, Q, T)
          helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),  # (N, Q, T, chunks)
          helper.make_node("Reshape", ["t", "merge"], ["outputs"]),  # (N, Q, T * chunks)
          helper.make_node("Mul", ["length", "chunks"], ["encoded_lengths"])],
         "encoder", [io("audio_signal", f32, ["N", feat_dim, "T"]), io("length", i64, ["N"])],
         [io("outputs", f32, ["N", Q, "T2"]), io("encoded_lengths", i64, ["N"])],
         [const("split", np.array([0, chunks, Q, -1])), const("merge", np.array([0, Q, -1])),
          const("chunks", np.array(chunks))],
         dict(vocab_size=Q, subsampling_factor=1, normalize_type=normalize_type, pred_rnn_layers=1, pred_hidden=Q,
              feat_dim=feat_dim))
    table = np.zeros((Q + 1, Q), np.float32)
    table[np.arange(Q + 1), [*range(1, Q), 0, 0]] = 1
    save([helper.make_node("Gather", ["table", "targets"], ["g"], axis=0),  # (N, 1, Q)
          helper.make_node("Transpose", ["g"], ["decoder_output"], perm=[0, 2, 1]),  # (N, Q, 1)
          helper.make_node("Identity", ["target_length"], ["decoder_output_length"]),
          helper.make_node("Identity", ["h"], ["h_next"]), helper.make_node("Identity", ["c"], ["c_next"])],
         "decoder", [io("targets", i32, ["N", 1]), io("target_length", i32, ["N"]), io("h", f32, [1, "N", Q]),
                     io("c", f32, [1, "N", Q])],
         [io("decoder_output", f32, ["N", Q, 1]), io("decoder_output_length", i32, ["N"]),
          io("h_next", f32, [1, "N", Q]), io("c_next", f32, [1, "N", Q])], [const("table", table)])
    save([helper.make_node("Mul", ["encoder_outputs", "decoder_outputs"], ["m"]),
          helper.make_node("ReduceSum", ["m", "axis1"], ["f"], keepdims=0),  # (N, 1): the value at index q
          helper.make_node("Sub", ["f", "shift"], ["f0"]), helper.make_node("Div", ["f0", "scale"], ["blank"]),
          helper.make_node("Sub", ["decoder_outputs", "one"], ["off"]),
          helper.make_node("Mul", ["off", "big"], ["tok3"]), helper.make_node("Squeeze", ["tok3", "axis2"], ["tok"]),
          helper.make_node("Concat", ["tok", "blank"], ["l"], axis=1),  # (N, Q + 1)
          helper.make_node("Reshape", ["l", "out"], ["logits"])],
         "joiner", [io("encoder_outputs", f32, ["N", Q, 1]), io("decoder_outputs", f32, ["N", Q, 1])],
         [io("logits", f32, ["N", 1, 1, Q + 1])],
         [const("shift", np.float32(SHIFT)), const("scale", np.float32(SCALE)), const("one", np.float32(1)),
          const("big", np.float32(1e4)), const("axis1", np.array([1])), const("axis2", np.array([2])),
          const("out", np.array([-1, 1, 1, Q + 1]))])
    (d / "tokens.txt").write_text("".join(f"q{i} {i}\n" for i in range(Q)) + f"<blk> {Q}\n")


def sherpa_onnx_features(recognizer, x: np.ndarray, feat_dim: int = 80) -> np.ndarray:
    stream = recognizer.create_stream()
    stream.accept_waveform(16000, x)
    recognizer.decode_stream(stream)
    log_probs = np.asarray(stream.result.ys_log_probs, np.float64)
    assert log_probs.size == num_frames(x.size, 160) * feat_dim
    return (np.log(np.expm1(-log_probs)) * SCALE + SHIFT).reshape(-1, feat_dim)


@pytest.mark.parametrize("normalize", [True, False])
def test_equals_sherpa_onnx_end_to_end(tmp_path, normalize, espeak):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    pytest.importorskip("onnx")
    feature_probe_model(tmp_path, "per_feature" if normalize else "NA")
    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        str(tmp_path / "encoder.onnx"), str(tmp_path / "decoder.onnx"), str(tmp_path / "joiner.onnx"),
        str(tmp_path / "tokens.txt"), model_type="nemo_transducer")
    rng = np.random.default_rng(3)
    settings = FbankSettings.sherpa_nemo(normalize=normalize)
    for x in [speech_like(rng, 399), speech_like(rng, 12345), with_silence(rng), espeak]:
        got = sherpa_onnx_features(recognizer, x)
        np.testing.assert_allclose(kaldi_fbank(x, settings), got, rtol=0, atol=SHERPA_TOL)
