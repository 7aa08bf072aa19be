"""Transcribe with an exported model (`fastasr export`): onnxruntime + NumPy, never torch.

    from fastasr.runtime import transcribe
    transcribe("export_dir", ["a.opus", "b.wav"])                    # [(path, text), …]
    transcribe("export_dir", paths, precision="int8", threads=2)    # the quantised graphs

The same audio path as `fastasr transcribe --checkpoint` (fastasr.audio.files: any rate and channel count, long
recordings cut at quiet points, length-sorted batches, input order), the model's features in NumPy (the log-mel of
fastasr.audio.mel or the kaldi fbank of fastasr.audio.fbank, as model.json says) and the checkpoint's greedy
decoding over the encoder / predictor / joiner graphs (fastasr.runtime.transducer), whose calling convention is
sherpa-onnx's NeMo transducers' (fastasr.runtime.model_dir). Importing
this package imports neither torch nor onnxruntime; onnxruntime is loaded with the first model. Nothing here may
import torch: tests/runtime/test_runtime.py runs it in a process where torch cannot be imported.
"""

from fastasr.audio.files import Transcript, UnreadableAudio
from fastasr.errors import UserError
from fastasr.runtime.model_dir import ModelDir, read_model_dir
from fastasr.runtime.transducer import OnnxTransducer, iter_transcripts, transcribe

__all__ = ["OnnxTransducer", "iter_transcripts", "transcribe", "read_model_dir", "ModelDir", "Transcript",
           "UnreadableAudio", "UserError"]
