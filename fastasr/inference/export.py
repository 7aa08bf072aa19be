"""`fastasr export`: a checkpoint → the ONNX graphs, tokenizer and front-end settings of fastasr.runtime.model_dir.

Three graphs, cut where a transducer runtime loops (icefall's export-onnx.py, sherpa-onnx): the encoder runs once
per batch (batch and time dynamic); the predictor runs one label step with its LSTM state in and out, so the
decoder owns the state and can keep, select or reorder it per hypothesis; the joiner is one (N, J, 1) + (N, J, 1)
→ (N, V) step. The joiner's two input projections travel with the encoder and predictor graphs (`Transducer.encode`
and `predict` already apply them), so each decoding step pays only tanh and the output layer. Shapes, dtypes and
ids follow sherpa-onnx's NeMo transducers (fastasr.runtime.model_dir): features and encoder output channels first,
int32 targets, the blank the last graph id (the predictor maps its targets to the model's ids, the joiner rotates
its logits back). For a model whose front end sherpa-onnx computes (model.frontend=kaldi) the export also writes
tokens.txt and sherpa's metadata on encoder.onnx (fastasr.inference.sherpa), so sherpa-onnx loads the directory as
it is; `sherpa=True` (`--sherpa`) insists on that, `sherpa=False` leaves them out.

The graphs come from torch's TorchScript-based exporter (`dynamo=False`, opset 17): it exports this model in
seconds, where the torch.export-based one took minutes and needs onnxscript besides. Every graph then passes the
ONNX checker (full_check: types and shapes) and an onnxruntime run on inputs of another batch size and length than
the traced ones, compared with torch (the largest differences are recorded in model.json's `check`).
A streaming model (model.streaming) also gets streaming_encoder.onnx, its encoder as one chunk step at the chunk and
left context asked for (`chunk_ms`, `left_chunks`), the caches in and out in the layout of sherpa-onnx's NeMo
cache-aware models (CacheLayout), checked deep in a stream; sherpa-onnx's online metadata is written on that graph,
since the online recogniser computes this model's features and the offline one does not.
`quantize="int8"` adds onnxruntime's dynamic quantisation of each graph (int8 weights, activations quantised per
call) as *.int8.onnx beside the float graphs, never instead of them.

The directory is written under a temporary name next to OUT and renamed when complete. An OUT that exists is
replaced only when it is empty or a fastasr export and nothing else (fastasr.runtime.model_dir.is_export: its
model.json says so and it holds only the files an export writes); anything else there, a symlink or a file as OUT
is refused. The old export is renamed aside before the new one is renamed in and deleted only after, so a crash
at any point leaves one of the two whole (at worst the old under `.OUT.old-*` beside it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastasr import __version__
from fastasr.audio.files import PREEMPHASIS
from fastasr.audio.mel import MelSettings
from fastasr.errors import UserError
from fastasr.inference import sherpa as sherpa_onnx
from fastasr.inference.stream_graph import StreamingEncoderGraph, streaming_inputs, streaming_settings
from fastasr.model.checkpoint import load, model_of, weights_digest
from fastasr.model.decode import MAX_SYMBOLS
from fastasr.model.transducer import Transducer, count_parameters, log_mel, waveform_of
from fastasr.runtime.model_dir import (DYNAMIC_AXES, EXPORT_FILES, GRAPHS, IO, MODEL_JSON, TOKENIZER_ID_OFFSET,
                                       TOKENIZER_JSON, TOKENS_TXT, graph_file, is_export, log_mel_features,
                                       model_json, tokenizer_json)
from fastasr.runtime.stream_spec import STREAMING_GRAPH, streaming_io
from fastasr.text.tokenizer import MODEL_FILE, tokenizer_of

log = logging.getLogger("fastasr.export")

OPSET = 17
QUANTIZE = ("int8",)
CHECK_TOLERANCE = 1e-3  # float graph vs torch, max abs difference on the check inputs; above it is an export bug


class _Encoder(nn.Module):
    def __init__(self, model: Transducer):
        super().__init__()
        self.model = model

    def forward(self, features, feature_lengths):  # (N, F, T), (N,)
        enc, lens = self.model.encode(features.transpose(1, 2), feature_lengths)  # (N, T', J), (N,)
        return enc.transpose(1, 2), lens  # (N, J, T')


class _Predictor(nn.Module):
    """One label step on graph ids: target s is the model's token (s + TOKENIZER_ID_OFFSET) % V."""

    def __init__(self, model: Transducer):
        super().__init__()
        self.model = model

    def forward(self, targets, target_length, h, c):  # (N, 1) int32, (N,) int32, (L, N, H) × 2
        tokens = torch.remainder(targets.long() + TOKENIZER_ID_OFFSET, self.model.config.vocab_size)  # (N, 1)
        out, (h, c) = self.model.predict(tokens, (h, c))  # (N, 1, J)
        # target_length comes back as the output's length (one step), as NeMo's decoder returns it: the exporter
        # keeps an input only when an output uses it, and sherpa-onnx feeds it.
        return out.transpose(1, 2), target_length, h, c  # (N, J, 1)


class _Joiner(nn.Module):
    """Logits over graph ids: graph id s is the model's (s + TOKENIZER_ID_OFFSET) % V, so the blank comes last."""

    def __init__(self, model: Transducer):
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out, predictor_out):  # (N, J, 1), (N, J, 1)
        logits = self.joiner(encoder_out[:, :, 0], predictor_out[:, :, 0])  # (N, V)
        k = TOKENIZER_ID_OFFSET
        return torch.cat([logits[:, k:], logits[:, :k]], dim=1)  # (N, V)


def _inputs(model: Transducer, batch: int, frames: int, seed: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs for each graph: `batch` rows, the longest `frames` feature frames, the others shorter."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    lens = torch.linspace(frames, max(1, frames // 3), batch).round().long()
    state = torch.randn(c.pred_layers, batch, c.pred_hidden, generator=g)
    targets = torch.randint(0, c.vocab_size, (batch, 1), generator=g, dtype=torch.int32)
    return {
        "encoder": (torch.randn(batch, c.n_mels, frames, generator=g), lens),
        "predictor": (targets, torch.ones(batch, dtype=torch.int32), state, torch.randn_like(state)),
        "joiner": (torch.randn(batch, c.joint_dim, 1, generator=g), torch.randn(batch, c.joint_dim, 1, generator=g)),
    }


def _export_graph(module: nn.Module, args: tuple, path: Path, graph: str, io: tuple | None = None) -> None:
    inputs, outputs = io or IO[graph]
    axes = {name: {i: a for i, a in enumerate(dims) if a in DYNAMIC_AXES}
            for name, dims in {**inputs, **outputs}.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice (see above)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # loops over fixed sizes (heads, q/k/v)
        # The predictor takes its LSTM state as inputs, which is what this warning asks for.
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)  # rotary's even/odd slices
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes={k: v for k, v in axes.items() if v})


def _max_diff(session, module: nn.Module, args: tuple, graph: str, io: tuple | None = None) -> float:
    with torch.no_grad():
        want = module(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = session.run(None, {name: a.numpy() for name, a in zip((io or IO[graph])[0], args)})
    return max(float(np.abs(g - w.numpy()).max()) if g.size else 0.0 for g, w in zip(got, want))


def _check(path: Path, module: nn.Module, args: tuple, graph: str, io: tuple | None = None) -> float:
    """ONNX checker, then onnxruntime against torch on `args`; the largest absolute difference."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _max_diff(session, module, args, graph, io)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / src.name
        quant_pre_process(str(src), str(prepared))  # shape inference + graph optimisation, as onnxruntime advises
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)


def _write_graphs(model: Transducer, out: Path, quantize: str | None, encoder_meta: dict[str, str] | None,
                  stream: dict | None = None) -> dict[str, dict[str, float]]:
    """The float graphs (and the quantised copies) in `out`, each checked, the encoders with `encoder_meta` (sherpa
    metadata) when given, and a streaming model's chunk step when `stream` ({"chunk_frames", "left_chunks",
    "caches"}) is given; {precision: {graph: max |diff|}}."""
    c = model.config
    # In eval mode themselves: the exporter puts a module back into its own mode afterwards, recursively, and a
    # wrapper left in train mode would switch the model's dropout on for the checks below.
    modules = {"encoder": _Encoder(model).eval(), "predictor": _Predictor(model).eval(),
               "joiner": _Joiner(model).eval()}
    traced = _inputs(model, batch=2, frames=16 * c.subsampling, seed=0)
    checked = _inputs(model, batch=3, frames=23 * c.subsampling + 5, seed=1)  # other sizes: the axes are dynamic
    graphs, ios = list(GRAPHS), dict(IO)
    if stream is not None:
        modules[STREAMING_GRAPH] = StreamingEncoderGraph(model, stream["chunk_frames"], stream["left_chunks"]).eval()
        # traced at the start of a stream, checked deep in one: the caches' contents must not be baked in
        traced[STREAMING_GRAPH] = streaming_inputs(model, stream, batch=2, seed=0, chunks=0)
        checked[STREAMING_GRAPH] = streaming_inputs(model, stream, batch=3, seed=1,
                                                     chunks=stream["left_chunks"] + 2)
        graphs.append(STREAMING_GRAPH)
        ios[STREAMING_GRAPH] = streaming_io(stream["caches"])
    sherpa_encoder = "encoder" if stream is None else STREAMING_GRAPH  # the graph sherpa-onnx's metadata is on
    check: dict[str, dict[str, float]] = {"float": {}}
    for g in graphs:
        _export_graph(modules[g], traced[g], out / graph_file(g), g, ios[g])
        if g == sherpa_encoder and encoder_meta:
            sherpa_onnx.set_metadata(out / graph_file(g), encoder_meta)
        check["float"][g] = diff = _check(out / graph_file(g), modules[g], checked[g], g, ios[g])
        if not diff <= CHECK_TOLERANCE:
            raise RuntimeError(f"exported {g} differs from torch by {diff:.3g} (> {CHECK_TOLERANCE})")
    if quantize:
        check[quantize] = {}
        for g in graphs:
            _quantize(out / graph_file(g), out / graph_file(g, quantize))
            if g == sherpa_encoder and encoder_meta:  # the quantiser may drop or keep the float one's
                sherpa_onnx.set_metadata(out / graph_file(g, quantize), encoder_meta)
            check[quantize][g] = _check(out / graph_file(g, quantize), modules[g], checked[g], g, ios[g])
    return check


def _load(checkpoint: Path) -> tuple[Transducer, dict]:
    ckpt = load(checkpoint)
    return model_of(ckpt, checkpoint).eval(), ckpt


def _prepare_out(out: Path) -> None:
    """Refuse an --out that export may not replace (see the module's docstring)."""
    if out.is_symlink():
        raise UserError(f"--out {out}: is a symbolic link; give the export directory itself (fastasr replaces "
                        "only a directory it wrote)")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file, not an export directory; choose another --out")
    if any(out.iterdir()) and not is_export(out):
        raise UserError(f"--out {out}: exists and is not a fastasr export directory (it holds more than "
                        f"{MODEL_JSON} of this format and {', '.join(sorted(EXPORT_FILES - {MODEL_JSON}))}); "
                        "choose another --out")


def _replace(tmp: Path, out: Path) -> None:
    """`tmp` renamed to `out`; an existing `out` (an export: _prepare_out) renamed aside first, deleted last."""
    if not out.exists():
        os.replace(tmp, out)
        return
    _prepare_out(out)  # again: the export took a while, and the directory is someone's until checked
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, aside)  # onto the empty directory mkdtemp made: a rename, atomic
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside)


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, *, quantize: str | None = None,
           sherpa: bool | None = None, chunk_ms: float | None = None, left_chunks: int | None = None) -> Path:
    """Write the export directory `out` for `checkpoint` (replacing an earlier export there); returns `out`.

    sherpa: None writes sherpa-onnx's tokens.txt and encoder metadata when sherpa-onnx computes the model's features
    (and logs why not otherwise); True requires that (a UserError for a model it cannot run); False never does.
    chunk_ms, left_chunks: a streaming model's chunk step (default DEFAULT_CHUNK_MS and model.left_chunks)."""
    checkpoint, out = Path(checkpoint), Path(os.path.abspath(out))  # abspath: "." has a name and a parent too
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(f"--quantize {quantize!r}: choose from {list(QUANTIZE)}")
    _prepare_out(out)
    versions = _onnx_versions()
    model, ckpt = _load(checkpoint)
    tokenizer = tokenizer_of(ckpt, checkpoint)
    c = model.config
    stream = streaming_settings(model, checkpoint, chunk_ms, left_chunks)
    features = _features(c)
    why_not = sherpa_onnx.unsupported(c, features) if sherpa is not False else "not asked for (sherpa=False)"
    if why_not and sherpa:
        raise UserError(f"--sherpa: {why_not}; {sherpa_onnx.HINT}")
    if why_not and sherpa is None:
        log.info("%s: %s, so the export is for fastasr.runtime only; %s", checkpoint, why_not, sherpa_onnx.HINT)
    tokens_txt = None if why_not else sherpa_onnx.tokens_txt(tokenizer.pieces())
    comment = f"fastasr {__version__} export of {checkpoint.name} (step {ckpt.get('step')})"
    encoder_meta = None
    if not why_not:  # a streaming model's features are the online recogniser's, its offline graph no one's
        encoder_meta = (sherpa_onnx.online_encoder_metadata(c, features, stream, comment) if stream else
                        sherpa_onnx.encoder_metadata(c, features, comment))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the directory through the rename
    try:
        check = _write_graphs(model, tmp, quantize, encoder_meta, stream)
        source = {"checkpoint": str(checkpoint), "step": ckpt.get("step"), "weights_sha256": weights_digest(model),
                  "parameters": count_parameters(model), "model_config": asdict(c),
                  "torch": torch.__version__, **versions}
        meta = model_json(features=features, waveform=waveform_of(c), preemphasis=PREEMPHASIS,
                          subsampling=c.subsampling, encoder_dim=c.joint_dim, pred_layers=c.pred_layers,
                          pred_hidden=c.pred_hidden, vocab_size=c.vocab_size, max_symbols=MAX_SYMBOLS,
                          precisions=list(check), opset=OPSET, sherpa=tokens_txt is not None, source=source,
                          check={p: {g: float(f"{d:.3g}") for g, d in v.items()} for p, v in check.items()},
                          streaming=stream)
        _write_json(tmp / TOKENIZER_JSON, tokenizer_json(tokenizer))
        if tokenizer.kind == "sentencepiece":  # for other runtimes (sherpa-onnx and the like); ours reads the json
            (tmp / MODEL_FILE).write_bytes(tokenizer.model)
        if tokens_txt is not None:
            (tmp / TOKENS_TXT).write_text(tokens_txt, encoding="utf-8")
        _write_json(tmp / MODEL_JSON, meta)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _features(c) -> dict:
    """model.json's `features`: every setting of the model's front end (fastasr.model.transducer.log_mel)."""
    fe = log_mel(c)
    if c.frontend == "kaldi":  # fastasr.model.fbank.KaldiFbank: FbankSettings.to_dict, its recipe included
        return fe.settings()
    return log_mel_features(MelSettings(sample_rate=fe.sample_rate, n_fft=fe.n_fft, win_length=fe.win_length,
                                        hop_length=fe.hop_length, n_mels=fe.n_mels, f_min=fe.f_min, f_max=fe.f_max,
                                        log_floor=fe.log_floor, normalize=fe.normalize, norm_eps=fe.norm_eps))


def _onnx_versions() -> dict[str, str]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError(f"fastasr export needs onnx and onnxruntime ({exc}): pip install 'fastasr[export]'") from None

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
