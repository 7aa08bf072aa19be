"""`fastasr transcribe (--checkpoint CKPT | --model EXPORT_DIR) AUDIO…`: one `path<TAB>text` line per file, printed
as they are done (`--timestamps`: a third column with each word's times). `--model` runs an export of `fastasr
export` with onnxruntime and never imports torch. `--stream` feeds each file to a streaming model chunk by chunk
(fastasr.runtime.stream), the partial results on stderr as `path<TAB>seconds fed<TAB>text`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from fastasr.commands.args import check_checkpoint_path, non_negative_int, positive_float, positive_int
from fastasr.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help="a checkpoint written by `fastasr train` (e.g. "
                        "RUN_DIR/last.pt)")
    source.add_argument("--model", metavar="EXPORT_DIR",
                        help="a directory written by `fastasr export`: onnxruntime + NumPy, torch is never imported")
    p.add_argument("audio", nargs="+",
                   help="audio files (opus, wav, flac; any rate, channel count and length), directories (their audio "
                        "files, recursively), - (paths on stdin), @FILE (paths in FILE), NeMo manifests (.json / "
                        ".jsonl with audio_filepath) or Kaldi wav.scp files (the utterance id is printed)")
    p.add_argument("--out", metavar="FILE",
                   help="write the results to FILE instead of stdout: JSON lines for .jsonl / .json (id, path, text "
                        "and, with --timestamps, words), else TSV (id, text[, words]); written whole, then renamed "
                        "into place")
    p.add_argument("--beam", type=positive_int, default=1, metavar="K",
                   help="beam width; 1 = batched greedy decoding (--checkpoint only; an export decodes greedily)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the checkpoint's model runs (--checkpoint only; an export runs on the CPU)")
    p.add_argument("--int8", action="store_true", help="with --model: the int8 graphs of `export --quantize int8`")
    p.add_argument("--threads", type=non_negative_int, default=0, metavar="N",
                   help="CPU threads for the model (torch's or onnxruntime's); 0 = the library's default")
    p.add_argument("--batch-seconds", type=positive_float, default=240.0, metavar="S",
                   help="padded seconds of audio per batch (pieces are sorted by length before batching)")
    p.add_argument("--max-piece-seconds", type=positive_float, default=30.0, metavar="S",
                   help="longer recordings are cut at quiet points into pieces of at most this length")
    p.add_argument("--timestamps", action="store_true",
                   help="a third column: each word with its start and end in seconds, as JSON "
                        "[[word, start, end], …] (greedy decoding; the times are the frames that emitted its tokens)")
    p.add_argument("--stream", action="store_true",
                   help="a streaming model (model.streaming=true): feed each file chunk by chunk as a live stream "
                        "would, print the partial result on stderr as it grows and the final one on stdout")
    p.add_argument("--chunk-ms", type=positive_float, default=None, metavar="MS",
                   help="with --stream: the chunk, a multiple of the model's encoder frame (--checkpoint: default "
                        "640; --model: the exported one)")


def _transcripts(args: argparse.Namespace, progress: bool):
    if args.stream:
        return _streamed(args)
    if args.chunk_ms is not None:
        raise UserError("--chunk-ms applies to --stream (simulated streaming of a whole test set: fastasr eval "
                        "--chunk-ms)")
    from fastasr.audio.files import QUIET_FRAME, SAMPLE_RATE

    shortest = 3 * QUIET_FRAME / SAMPLE_RATE  # a cut is searched in the last third, in 20-ms frames
    if args.max_piece_seconds < shortest:
        raise UserError(f"--max-piece-seconds wants at least {shortest:g}, got {args.max_piece_seconds:g}")
    common = dict(threads=args.threads, batch_seconds=args.batch_seconds, max_piece_seconds=args.max_piece_seconds,
                  on_error="skip", progress=progress, timestamps=args.timestamps)
    if args.model is not None:
        if args.beam != 1:
            raise UserError("--beam applies to --checkpoint; an export (--model) is decoded greedily")
        from fastasr.runtime import iter_transcripts

        return iter_transcripts(args.model, args.audio, precision="int8" if args.int8 else "float", **common)
    if args.int8:
        raise UserError("--int8 applies to --model EXPORT_DIR, not to --checkpoint")
    from fastasr.inference.transcribe import iter_transcripts

    return iter_transcripts(args.checkpoint, args.audio, beam=args.beam, device=args.device, **common)


def _streamed(args: argparse.Namespace):
    """Transcripts of the files streamed one by one: each read whole (any format, rate, channels), then fed in
    pieces of one chunk, the partial result on stderr whenever it changes."""
    from fastasr.audio.files import SAMPLE_RATE, Transcript, UnreadableAudio, read_mono

    if args.beam != 1:
        raise UserError("--stream decodes greedily: leave --beam at 1")
    if args.model is not None:
        from fastasr.runtime import OnnxTransducer

        engine = OnnxTransducer(args.model, precision="int8" if args.int8 else "float", threads=args.threads)
        if engine.streaming is None:
            raise UserError(f"--stream: {args.model} is an export of a model that does not stream (it reads the "
                            "whole utterance); train one with model.streaming=true and export it")
        chunk_ms = engine.streaming.chunk_frames * engine.frame_seconds * 1000
        if args.chunk_ms is not None and abs(args.chunk_ms - chunk_ms) > 1e-6:
            raise UserError(f"--chunk-ms {args.chunk_ms:g}: {args.model} was exported with {chunk_ms:g}-ms chunks "
                            f"(export again with --chunk-ms {args.chunk_ms:g})")
    else:
        if args.int8:
            raise UserError("--int8 applies to --model EXPORT_DIR, not to --checkpoint")
        from fastasr.inference.streaming import CheckpointStreamEngine

        engine = CheckpointStreamEngine(args.checkpoint, chunk_ms=args.chunk_ms, threads=args.threads)
        chunk_ms = engine.streaming.chunk_frames * engine.frame_seconds * 1000
    piece = int(round(chunk_ms * SAMPLE_RATE / 1000))
    for path in args.audio:
        try:
            audio = read_mono(path)
        except UnreadableAudio as exc:
            yield Transcript(path, None, str(exc))
            continue
        stream, shown = engine.stream(), ""
        for start in range(0, audio.size, piece):
            stream.accept_waveform(audio[start:start + piece])
            if stream.text != shown:
                shown = stream.text
                print(f"{path}\t{min(start + piece, audio.size) / SAMPLE_RATE:.2f} s\t{shown}", file=sys.stderr,
                      flush=True)
        result = stream.finish()
        yield Transcript(path, result.text, None, result.words if args.timestamps else None)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every file was transcribed; 1 when some could not be read (each is named on stderr). A user
    mistake (a missing checkpoint, a missing or corrupt export directory) is a UserError: one line, exit 2."""
    from tqdm import tqdm

    from fastasr.corpus.inputs import audio_inputs

    _check_source(args)
    inputs = audio_inputs(args.audio)
    args.audio = [i.path for i in inputs]
    out, tmp = None, None
    if args.out is not None:
        target = os.path.abspath(args.out)
        if os.path.isdir(target):
            raise UserError(f"--out {args.out}: is a directory; give a file name (.tsv or .jsonl)")
        tmp = f"{target}.tmp-{os.getpid()}"
        out = open(tmp, "w", encoding="utf-8")
    jsonl = args.out is not None and args.out.lower().endswith((".jsonl", ".json"))
    failed = 0
    try:
        for item, t in zip(inputs, _transcripts(args, progress=sys.stderr.isatty())):
            if t.text is None:
                failed += 1
                tqdm.write(f"fastasr transcribe: skipped {t.error}", file=sys.stderr)
                continue
            words = None if t.words is None else [[w, a, b] for w, a, b in t.words]
            if jsonl:
                record = {"id": item.id, "path": item.path, "text": t.text, **({} if words is None else
                                                                              {"words": words})}
                line = json.dumps(record, ensure_ascii=False)
            else:
                line = f"{item.id}\t{t.text}" + ("" if words is None else "\t" + json.dumps(words, ensure_ascii=False))
            if out is not None:
                out.write(line + "\n")
            else:
                tqdm.write(line, file=sys.stdout)  # above the progress bar, when there is one
                sys.stdout.flush()
        if out is not None:
            out.close()
            os.replace(tmp, target)
    finally:
        if out is not None and not out.closed:
            out.close()
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    if failed:
        print(f"fastasr transcribe: {failed} of {len(inputs)} files could not be read (named above)",
              file=sys.stderr)
        return 1
    return 0


def _check_source(args: argparse.Namespace) -> None:
    """A checkpoint that is a directory, or an export directory that is a file: say what was probably meant."""
    if args.checkpoint is not None and os.path.exists(args.checkpoint):
        check_checkpoint_path(args.checkpoint)
    if args.model is not None and os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: is a file, not an export directory; did you mean --checkpoint "
                        f"{args.model} (or the --out DIR of `fastasr export {args.model}`)?")
