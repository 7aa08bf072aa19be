"""Measure a streaming model on a test split: CER at full context and at each chunk, when its words are emitted,
how fast its streaming runtime is and how long a word takes to appear in the partial result.

    python tools/streaming_report.py CKPT --data SHARDS [--chunks-ms 640,320,160] [--reference CKPT]
        [--runtime-utterances 200] [--out report.json]

- CER / WER: simulated streaming (the chunk-masked whole-utterance forward, equal to the cached chunk step:
  tests/runtime/test_stream.py) at each chunk, and at full context, greedy, on the whole split.
- Emission delay: per word that the chunked and the reference alignment both decode (the word sequences matched
  by difflib), the time of the encoder frame emitting its last token, chunked minus reference; mean and 90th
  percentile. The reference is `--reference` (a full-context model) or else the model itself at full context.
- Runtime (fastasr.runtime on one thread, the model exported at each chunk): real-time factor (compute seconds per
  second of audio) over the first --runtime-utterances utterances fed chunk by chunk, and the latency from a
  word's end (the reference alignment's emission frame end) to its appearance in the partial result, taking the
  audio as arriving in real time: the end of the piece that completed its chunk plus the compute time of that
  call. Mean and 90th percentile.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastasr.data import build_loader  # noqa: E402
from fastasr.inference.export import export  # noqa: E402
from fastasr.model.checkpoint import load_model  # noqa: E402
from fastasr.model.decode import greedy_batch_timed  # noqa: E402
from fastasr.model.streaming import FRAME_MS, chunk_frames_of  # noqa: E402
from fastasr.model.transducer import log_mel, waveform_of  # noqa: E402
from fastasr.runtime import OnnxTransducer  # noqa: E402
from fastasr.text.scoring import score  # noqa: E402
from fastasr.text.timestamps import word_times  # noqa: E402


def test_utterances(data: str, config, limit: int | None = None):
    """(key, text, 16-kHz samples) of the split, in shard order."""
    loader = build_loader(data, "test", max_batch_seconds=200.0, num_workers=0, shuffle=False,
                          waveform=waveform_of(config))
    n = 0
    for batch in loader:
        for b, key in enumerate(batch.keys):
            yield key, batch.texts[b], batch.audio[b, :int(batch.audio_lens[b])].numpy()
            n += 1
            if limit is not None and n >= limit:
                return


@torch.no_grad()
def decode_all(ckpt: str, utterances, chunk_frames: int | None, batch: int = 16):
    """Per utterance: (text, word end times in s), simulated streaming at chunk_frames (None: full context)."""
    model, tokenizer, config = load_model(ckpt, torch.device("cpu"))
    model.eval()
    frontend = log_mel(config)
    frame_s = config.subsampling * FRAME_MS / 1000
    out = []
    for i in range(0, len(utterances), batch):
        group = utterances[i:i + batch]
        lens = torch.tensor([u[2].size for u in group])
        audio = torch.zeros(len(group), int(lens.max()))
        for b, u in enumerate(group):
            audio[b, :u[2].size] = torch.from_numpy(u[2])
        feats, feat_lens = frontend(audio, lens)
        enc, enc_lens = model.encode(feats, feat_lens, chunk_frames=chunk_frames)
        for ids, frames in zip(*greedy_batch_timed(model, enc, enc_lens)):
            words = word_times(tokenizer, ids, [f * frame_s for f in frames], frame_s)
            out.append((tokenizer.decode(ids), [(w, b - frame_s) for w, _, b in words]))  # last token's frame
    return out


def matched_delays(hyp_words, ref_words) -> list[float]:
    """Seconds, hyp minus ref, of the last-token times of words the two decode alike (difflib's matching blocks)."""
    a, b = [w for w, _ in hyp_words], [w for w, _ in ref_words]
    out = []
    for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            out.append(hyp_words[block.a + k][1] - ref_words[block.b + k][1])
    return out


def runtime_run(model_dir: Path, utterances, reference, frame_s: float):
    """(RTF on one thread, latencies in s) of the exported streaming model fed chunk by chunk."""
    model = OnnxTransducer(model_dir, threads=1)
    piece = int(model.streaming.chunk_frames * frame_s * 16000)
    compute, audio_s, latencies = 0.0, 0.0, []
    for (_, _, x), (_, ref_words) in zip(utterances, reference):
        stream = model.stream()
        appear = []  # (partial text, arrival time of the piece + compute of the call)
        for start in range(0, x.size, piece):
            t0 = time.perf_counter()
            stream.accept_waveform(x[start:start + piece])
            dt = time.perf_counter() - t0
            compute += dt
            appear.append((stream.text.split(), min(start + piece, x.size) / 16000 + dt))
        t0 = time.perf_counter()
        final = stream.finish()
        dt = time.perf_counter() - t0
        compute += dt
        appear.append((final.text.split(), x.size / 16000 + dt))
        audio_s += x.size / 16000
        # word j of the final text has appeared once a partial holds it spelled as the final text does; words
        # matched to the reference alignment as matched_delays does
        final_words = appear[-1][0]
        ref = [w for w, _ in ref_words]
        for block in difflib.SequenceMatcher(a=final_words, b=ref, autojunk=False).get_matching_blocks():
            for k in range(block.size):
                j, word_end = block.a + k, ref_words[block.b + k][1] + frame_s
                for words, when in appear:
                    if words[j:j + 1] == [final_words[j]]:
                        latencies.append(when - word_end)
                        break
    return compute / audio_s, latencies


def stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "mean_ms": round(float(v.mean()) * 1000, 1) if v.size else None,
            "p90_ms": round(float(np.percentile(v, 90)) * 1000, 1) if v.size else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--chunks-ms", default="640,320,160")
    p.add_argument("--reference", default=None, help="a full-context model's checkpoint for the alignment")
    p.add_argument("--limit", type=int, default=None, help="the first N test utterances only")
    p.add_argument("--runtime-utterances", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    _, _, config = load_model(args.checkpoint, torch.device("cpu"))
    utterances = list(test_utterances(args.data, config, args.limit))
    refs = [u[1] for u in utterances]
    frame_s = config.subsampling * FRAME_MS / 1000
    report = {"checkpoint": args.checkpoint, "utterances": len(utterances),
              "hours": round(sum(u[2].size for u in utterances) / 16000 / 3600, 3), "rows": []}
    t = time.perf_counter()
    full = decode_all(args.checkpoint, utterances, None)
    reference = decode_all(args.reference, utterances, None) if args.reference else full
    m = score(refs, [h for h, _ in full])
    report["rows"].append({"chunk_ms": "full", "cer": m["cer"], "wer": m["wer"],
                           "delay": stats([d for h, r in zip(full, reference) for d in matched_delays(h[1], r[1])])})
    print(json.dumps(report["rows"][-1]), f"({time.perf_counter() - t:.0f} s)", flush=True)
    for ms in (float(v) for v in args.chunks_ms.split(",")):
        t = time.perf_counter()
        chunk = chunk_frames_of(config, ms, args.checkpoint)
        hyps = decode_all(args.checkpoint, utterances, chunk)
        m = score(refs, [h for h, _ in hyps])
        row = {"chunk_ms": ms, "cer": m["cer"], "wer": m["wer"],
               "delay": stats([d for h, r in zip(hyps, reference) for d in matched_delays(h[1], r[1])])}
        n = min(args.runtime_utterances, len(utterances))
        if n:
            with tempfile.TemporaryDirectory() as tmp:
                export(args.checkpoint, Path(tmp) / "export", chunk_ms=ms)
                rtf, latencies = runtime_run(Path(tmp) / "export", utterances[:n], reference[:n], frame_s)
            row.update(runtime_rtf_1_thread=round(rtf, 4), word_to_partial=stats(latencies), runtime_utterances=n)
        report["rows"].append(row)
        print(json.dumps(row), f"({time.perf_counter() - t:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
