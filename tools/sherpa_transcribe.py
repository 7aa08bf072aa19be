"""Transcribe audio files with sherpa-onnx on a fastasr export directory: one `path<TAB>text` line per file, in the
order given, like `fastasr transcribe`.

    python tools/sherpa_transcribe.py EXPORT_DIR a.opus b.wav … [--threads 2] [--int8]
        [--decoding-method greedy_search|modified_beam_search] [--sherpa-resample]

Needs `pip install sherpa-onnx==2.0.1` (in fastasr's dev extra) and an export of a model.frontend=kaldi model
(`fastasr export` writes tokens.txt and the encoder's metadata for it). Files are decoded with soundfile and
downmixed by the channel mean; other rates than 16 kHz are resampled with soxr, as fastasr reads them, unless
--sherpa-resample hands sherpa-onnx the file's own rate (it then resamples with its own linear resampler, so the
features, and sometimes the text, differ slightly from fastasr's). sherpa-onnx does not cut long recordings:
fastasr does at 30 s (`--max-piece-seconds`). sherpa-onnx ends the process on a model it cannot load (exit 255,
its reason on stderr); this script checks the directory first, so that case is rare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, metavar="EXPORT_DIR")
    p.add_argument("audio", nargs="+", metavar="AUDIO")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--int8", action="store_true", help="the *.int8.onnx graphs")
    p.add_argument("--decoding-method", default="greedy_search", choices=("greedy_search", "modified_beam_search"))
    p.add_argument("--chunk-ms", type=float, default=100.0,
                   help="an export of a streaming model: feed the audio in pieces of this many ms (default 100)")
    p.add_argument("--sherpa-resample", action="store_true",
                   help="hand sherpa-onnx the file's own sample rate instead of resampling with soxr first")
    args = p.parse_args()
    meta_path = args.model_dir / "model.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"fastasr: error: {meta_path}: not a fastasr export ({exc})", file=sys.stderr)
        return 2
    sherpa = meta.get("sherpa_onnx")
    if not sherpa:
        print(f"fastasr: error: {args.model_dir}: an export for fastasr's runtime only (its model's front end is not "
              "one sherpa-onnx computes); train with model.frontend=kaldi", file=sys.stderr)
        return 2
    precision = "int8" if args.int8 else "float"
    graphs = meta["graphs"][precision]
    online = sherpa.get("recognizer") == "online"
    encoder = meta["streaming"]["graphs"][precision] if online else graphs["encoder"]
    files = {"encoder": encoder, "decoder": graphs[sherpa.get("decoder", "predictor")],
             "joiner": graphs["joiner"], "tokens": sherpa["tokens"]}

    import numpy as np
    import sherpa_onnx
    import soundfile as sf
    import soxr

    kind = sherpa_onnx.OnlineRecognizer if online else sherpa_onnx.OfflineRecognizer
    recognizer = kind.from_transducer(
        **{k: str(args.model_dir / v) for k, v in files.items()}, model_type=sherpa.get("model_type",
                                                                                         "nemo_transducer"),
        num_threads=args.threads, decoding_method=args.decoding_method)
    status = 0
    for path in args.audio:
        try:
            x, sr = sf.read(path, dtype="float32", always_2d=True)  # (S, C)
        except Exception as exc:  # libsndfile's errors carry no useful type
            print(f"{path}: cannot be read ({exc})", file=sys.stderr)
            status = 1
            continue
        samples = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
        if sr != 16000 and not args.sherpa_resample:
            samples, sr = soxr.resample(samples, sr, 16000), 16000
        if online:
            print(f"{path}\t{online_text(recognizer, samples, sr, meta, args.chunk_ms)}", flush=True)
            continue
        stream = recognizer.create_stream()
        stream.accept_waveform(sr, samples)
        recognizer.decode_stream(stream)
        print(f"{path}\t{stream.result.text}", flush=True)
    return status


def online_text(recognizer, samples, sr: int, meta: dict, chunk_ms: float) -> str:
    """Feed the samples in `chunk_ms` pieces, decoding whatever chunks are ready after each, as a live stream
    would. sherpa-onnx decodes only whole windows and never the frames left at the end, so the stream ends with
    zeros enough for the window that holds the last real frame to be decoded (a window and three frames)."""
    import numpy as np

    stream = recognizer.create_stream()
    piece = max(1, int(sr * chunk_ms / 1000))
    f = meta["features"]
    tail = np.zeros(int(sr * ((meta["streaming"]["feature_frames"] + 3) * f["hop_length"] + f["win_length"])
                        / f["sample_rate"]), np.float32)
    for x in (*(samples[i:i + piece] for i in range(0, samples.size, piece)), tail):
        stream.accept_waveform(sr, x)
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return recognizer.get_result(stream)


if __name__ == "__main__":
    sys.exit(main())
