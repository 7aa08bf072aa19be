"""Export and runtime: transcription with the export (onnxruntime, float and int8) beside the checkpoint (torch), the
same files and the same threads, in one run; and the CER of each on the test split.

Needs a trained model and its shards: FASTASR_BENCH_CHECKPOINT (default demo_out/run/last.pt) and
FASTASR_BENCH_SHARDS (default demo_out/shards, whose test split is transcribed); skipped without them (`make demo`
makes both). The checkpoint is exported (float + int8) to a temporary directory first.
- files: every utterance of the test split, written out as the file it was sharded from (the stored Opus bytes),
  transcribed as `fastasr transcribe PATHS…` does it: fastasr.audio.files.transcribe_files (decode, mono, 16 kHz,
  cut, normalise, length-sorted batches of 240 padded seconds) with the checkpoint's recogniser
  (fastasr.inference.transcribe: torch log-mel, encoder, batched greedy) or the export's (fastasr.runtime: NumPy log-mel,
  onnxruntime graphs, the same greedy loop in NumPy).
- sherpa: sherpa-onnx 2.0.1 on the same export directory (only for a model.frontend=kaldi checkpoint): its own
  fbank, the export's graphs and tokens.txt, greedy_search, decode_streams over batches of 16 files; the files
  decoded with soundfile and resampled with soxr as fastasr reads them (tests/sherpa_helpers.SherpaWorker, a child
  process kept loaded between rounds). same_as_checkpoint compares words (sherpa drops a leading space).
- threads: N torch intra-op threads for the checkpoint, onnxruntime intra_op_num_threads=N for the export, for N in
  FASTASR_BENCH_THREADS (default "1,2").
- timed: the whole list, the model already loaded; a warm-up on 8 files first (Numba compile, allocators).
- OpenMP: torch's threads wait passively, as under the CLI (fastasr.commands sets OMP_WAIT_POLICY=PASSIVE), when
  this module is imported before torch; run it alone for that. extra_info records the policy in force.
extra_info: audio_seconds, rtf (median time / audio time) and rtf_min, x_checkpoint / x_checkpoint_min (the
checkpoint's time at the same threads over this one's), cer and wer (fastasr.text.scoring.score, as `fastasr eval`),
same_as_checkpoint (files whose text equals the checkpoint's).
Run: pytest benchmarks/test_export_bench.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

import fastasr.commands  # noqa: F401  isort:skip  (first: OMP_WAIT_POLICY=PASSIVE before torch loads, as the CLI runs)
import torch  # noqa: E402  isort:skip

from fastasr.audio.files import transcribe_files
from fastasr.inference.export import export
from fastasr.inference.transcribe import checkpoint_recogniser
from fastasr.runtime import OnnxTransducer
from fastasr.text.scoring import score

ROOT = Path(__file__).resolve().parent.parent
CKPT = Path(os.environ.get("FASTASR_BENCH_CHECKPOINT", ROOT / "demo_out" / "run" / "last.pt"))
SHARDS = Path(os.environ.get("FASTASR_BENCH_SHARDS", ROOT / "demo_out" / "shards"))
THREADS = [int(t) for t in os.environ.get("FASTASR_BENCH_THREADS", "1,2").split(",")]
ROUNDS = int(os.environ.get("FASTASR_BENCH_ROUNDS", "2"))
# sherpa: sherpa-onnx 2.0.1 on the same export (a model.frontend=kaldi checkpoint; skipped for others), kept loaded
# in a child process (tests/sherpa_helpers.SherpaWorker: it ends its process on a model it cannot load); files
# decoded with soundfile, downmixed and resampled with soxr as fastasr reads them, decode_streams over 16 files.
VARIANTS = ["checkpoint", "export_float", "export_int8", "sherpa"]

pytestmark = pytest.mark.skipif(not (CKPT.is_file() and (SHARDS / "index.json").is_file()),
                                reason=f"needs a trained model: {CKPT} and {SHARDS}/index.json (make demo)")
_done: dict[tuple[str, int], tuple[object, list[str]]] = {}
_workers: list = []  # sherpa child processes, closed at the end of the module


@pytest.fixture(scope="module", autouse=True)
def _close_workers():
    yield
    for w in _workers:
        w.close()


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """(paths, references, seconds of audio) of the shards' test split, the audio written out as files."""
    out = tmp_path_factory.mktemp("test_split")
    index = json.loads((SHARDS / "index.json").read_text())
    paths, refs, seconds = [], [], 0.0
    for shard in index["splits"]["test"]["shards"]:
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(SHARDS / shard["path"]) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(info).read()
        for key, m in members.items():
            ext = next(e for e in ("opus", "wav", "flac") if e in m)
            path = out / f"{key.replace('/', '_')}.{ext}"
            path.write_bytes(m[ext])
            paths.append(str(path))
            refs.append(m["txt"].decode())
            seconds += json.loads(m["json"])["duration"]
    return paths, refs, seconds


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return export(CKPT, tmp_path_factory.mktemp("export") / "model", quantize="int8")


def runner(variant: str, threads: int, model_dir: Path):
    if variant == "sherpa":
        if not (model_dir / "tokens.txt").is_file():
            pytest.skip("the export has no sherpa-onnx files (its checkpoint is not model.frontend=kaldi)")
        pytest.importorskip("sherpa_onnx")
        import sys

        sys.path.insert(0, str(ROOT / "tests"))
        from sherpa_helpers import SherpaWorker

        worker = SherpaWorker(model_dir, threads=threads)
        _workers.append(worker)
        return worker
    if variant == "checkpoint":
        recognise = checkpoint_recogniser(CKPT, device="cpu", threads=threads)
        preemphasis = {"waveform": recognise.waveform}
    else:
        recognise = OnnxTransducer(model_dir, precision=variant.removeprefix("export_"), threads=threads)
        preemphasis = {"preemphasis": recognise.dir.preemphasis, "waveform": recognise.waveform}
    return lambda paths: [t.text for t in transcribe_files(paths, recognise, **preemphasis)]


@pytest.mark.parametrize("variant,threads", [(v, t) for t in THREADS for v in VARIANTS])
def test_transcribe_test_split(benchmark, test_split, export_dir, variant, threads):
    paths, refs, seconds = test_split
    torch.set_num_threads(threads)  # the checkpoint's threads; also keeps torch idle beside onnxruntime's
    run = runner(variant, threads, export_dir)
    run(paths[:8])
    benchmark.group = f"transcribe the test split ({len(paths)} files, {seconds / 60:.1f} min), {threads} thread(s)"
    texts = benchmark.pedantic(run, args=(paths,), rounds=ROUNDS, iterations=1)
    stats = benchmark.stats.stats
    _done[(variant, threads)] = (stats, texts)
    info = benchmark.extra_info
    info["audio_seconds"] = round(seconds, 1)
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(default)")
    info["rtf"], info["rtf_min"] = round(stats.median / seconds, 4), round(stats.min / seconds, 4)
    scores = score(refs, texts)
    info["cer"], info["wer"] = round(scores["cer"], 4), round(scores["wer"], 4)
    if ("checkpoint", threads) in _done:
        base, base_texts = _done[("checkpoint", threads)]
        info["x_checkpoint"] = round(base.median / stats.median, 2)
        info["x_checkpoint_min"] = round(base.min / stats.min, 2)
        same = sum(a.split() == b.split() for a, b in zip(texts, base_texts))  # words: sherpa drops a leading space
        info["same_as_checkpoint"] = f"{same} of {len(texts)}"
    print(f"\n{variant} threads={threads}: {json.dumps(info, ensure_ascii=False)}")
