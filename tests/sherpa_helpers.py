"""sherpa-onnx's offline NeMo-transducer recogniser on a fastasr export directory, always in a child process.

sherpa-onnx ends the whole process on a model it cannot load (`_Exit(-1)`: exit status 255, no exception, its
reason on stderr), so a test never loads it in its own process. The child reads each file with soundfile, downmixes
it by the channel mean (as fastasr.audio.files does) and hands sherpa the file's own sample rate: sherpa resamples
other rates itself, with its own resampler, not soxr, so only 16-kHz files can give fastasr's features exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = r"""
import json, sys
import numpy as np
import sherpa_onnx
import soundfile as sf

args = json.loads(sys.argv[1])
recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
    **args["files"], model_type="nemo_transducer", num_threads=args["threads"],
    decoding_method=args["decoding_method"])
results = []
for path in args["wavs"]:
    x, sr = sf.read(path, dtype="float32", always_2d=True)  # (S, C)
    samples = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if args["soxr"] and sr != 16000:  # resampled as fastasr does it (soxr), not by sherpa's LinearResample
        import soxr
        samples, sr = soxr.resample(samples, sr, 16000), 16000
    stream = recognizer.create_stream()
    stream.accept_waveform(sr, samples)
    recognizer.decode_stream(stream)
    results.append({"text": stream.result.text, "tokens": list(stream.result.tokens)})
with open(args["out"], "w", encoding="utf-8") as f:
    json.dump(results, f, ensure_ascii=False)
"""


def sherpa_files(model_dir, precision: str = "float") -> dict[str, str]:
    """from_transducer's file arguments for an export directory, from its model.json (sherpa's decoder is our
    predictor)."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    graphs = meta["graphs"][precision]
    tokens = (meta.get("sherpa_onnx") or {}).get("tokens", "tokens.txt")
    return {"encoder": str(model_dir / graphs["encoder"]), "decoder": str(model_dir / graphs["predictor"]),
            "joiner": str(model_dir / graphs["joiner"]), "tokens": str(model_dir / tokens)}


def run_sherpa(files: dict[str, str], wav_paths, *, decoding_method: str = "greedy_search", threads: int = 1,
               timeout: float = 300, soxr: bool = False) -> tuple[subprocess.CompletedProcess, list[dict] | None]:
    """(the child process, [{"text", "tokens"} per file] or None when it failed) for from_transducer(**files)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        args = {"files": files, "wavs": [str(p) for p in wav_paths], "threads": threads,
                "decoding_method": decoding_method, "out": str(out), "soxr": soxr}
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        results = json.loads(out.read_text(encoding="utf-8")) if proc.returncode == 0 and out.is_file() else None
    return proc, results


def sherpa_results(model_dir, wav_paths, decoding_method: str = "greedy_search", threads: int = 1,
                   precision: str = "float", soxr: bool = False) -> list[dict]:
    """[{"text", "tokens"}] per file from sherpa-onnx on the export directory; AssertionError with sherpa's own
    words when it could not load the model or decode. soxr: files not at 16 kHz are resampled with soxr before
    sherpa sees them (as fastasr reads them), else sherpa resamples them itself."""
    proc, results = run_sherpa(sherpa_files(model_dir, precision), wav_paths, decoding_method=decoding_method,
                               threads=threads, soxr=soxr)
    assert results is not None, f"sherpa-onnx exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    return results


def sherpa_transcribe(model_dir, wav_paths, decoding_method: str = "greedy_search", threads: int = 1,
                      precision: str = "float", soxr: bool = False) -> list[str]:
    """sherpa-onnx's text for each file, as it gives it (its first space dropped, nothing else normalised)."""
    return [r["text"] for r in sherpa_results(model_dir, wav_paths, decoding_method, threads, precision, soxr)]


WORKER = r"""
import json, sys
import numpy as np
import sherpa_onnx
import soundfile as sf
import soxr

args = json.loads(sys.argv[1])
recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
    **args["files"], model_type="nemo_transducer", num_threads=args["threads"],
    decoding_method=args["decoding_method"])
print("ready", flush=True)
for line in sys.stdin:
    paths, texts = json.loads(line), []
    for i in range(0, len(paths), args["batch"]):
        streams = []
        for path in paths[i:i + args["batch"]]:
            x, sr = sf.read(path, dtype="float32", always_2d=True)
            samples = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
            if args["soxr"] and sr != 16000:
                samples, sr = soxr.resample(samples, sr, 16000), 16000
            streams.append(recognizer.create_stream())
            streams[-1].accept_waveform(sr, samples)
        recognizer.decode_streams(streams)
        texts += [s.result.text for s in streams]
    print(json.dumps(texts, ensure_ascii=False), flush=True)
"""


class SherpaWorker:
    """sherpa-onnx kept loaded in a child process: `worker(paths) -> texts`, each call one round trip of a line of
    JSON, so a benchmark times decoding (reading, resampling, decode_streams in batches of `batch` files), not
    loading. soxr: resample as fastasr reads files (else sherpa's own LinearResample)."""

    def __init__(self, model_dir, *, threads: int = 1, precision: str = "float", soxr: bool = True,
                 batch: int = 16, decoding_method: str = "greedy_search"):
        args = {"files": sherpa_files(model_dir, precision), "threads": threads, "soxr": soxr, "batch": batch,
                "decoding_method": decoding_method}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8",
                                     env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"sherpa-onnx did not load {model_dir} (exit {self.proc.returncode})")

    def __call__(self, paths) -> list[str]:
        self.proc.stdin.write(json.dumps([str(p) for p in paths]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sherpa-onnx ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
