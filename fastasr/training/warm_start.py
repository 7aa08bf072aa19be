"""How a run starts from saved weights: `--init-from` (the weights only: a fresh optimiser and schedule), and the
check that a `--resume` asks for nothing that contradicts the run it continues.

Fine-tuning onto another vocabulary keeps every weight but the two that are indexed by token id, the joiner's
output layer and the predictor's embedding, which keep this run's fresh initialisation.
"""

from __future__ import annotations

from dataclasses import fields

from fastasr.errors import UserError
from fastasr.model.transducer import Transducer
from fastasr.text.tokenizer import AnyTokenizer, tokenizer_of
from fastasr.training.config import Config

VOCAB_PARAMS = ("joiner.out.weight", "joiner.out.bias", "predictor.embed.weight")
# Model settings that change no weight's shape or meaning: a fine-tuning run may set them anew.
FREE_MODEL_SETTINGS = ("dropout", "vocab_size")
# Settings a resumed run may change besides the train section (stopping, logging, checkpoints, device): they do not
# change what is trained (loader processes, the size of the validation subset).
FREE_ON_RESUME = ("data.num_workers", "data.val_utterances", "data.val_batch_seconds")


def _differences(a: Config, b: Config, sections: tuple[str, ...]) -> list[tuple[str, object, object]]:
    return [(f"{s}.{f.name}", getattr(getattr(a, s), f.name), getattr(getattr(b, s), f.name))
            for s in sections for f in fields(getattr(a, s))
            if getattr(getattr(a, s), f.name) != getattr(getattr(b, s), f.name)]


def init_weights(model: Transducer, source: dict, tokenizer: AnyTokenizer, path) -> list[str]:
    """Load `source` (a checkpoint dict)'s weights into `model`; what was not taken over, to tell the user.

    A model setting other than dropout that differs from the source's is a UserError naming it: those weights
    would not fit. Another tokenizer than the source's (by identity: the same ids for the same text, not merely
    the same size) leaves the token-indexed layers as initialised."""
    theirs = Config.from_dict(source["config"])
    ours = Config(model=model.config)
    wrong = [d for d in _differences(theirs, ours, ("model",)) if d[0].split(".")[1] not in FREE_MODEL_SETTINGS]
    if wrong:
        said = ", ".join(f"{k}={mine} (it has {its})" for k, its, mine in wrong)
        raise UserError(f"--init-from {path}: this run's model differs from the checkpoint's in {said}; drop those "
                        "settings (with --init-from the model settings default to the checkpoint's)")
    state = dict(source["model"])
    lines = []
    theirs_tok = tokenizer_of(source, path)
    if theirs_tok.identity() != tokenizer.identity():
        for name in VOCAB_PARAMS:
            del state[name]
        lines.append(f"--init-from {path}: its tokenizer, {theirs_tok.describe()}, differs from this run's, "
                     f"{tokenizer.describe()}: re-initialised the joiner's output layer and the predictor's "
                     "embedding")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == set(VOCAB_PARAMS) - set(state), (missing, unexpected)
    return lines


def check_resume(saved: Config, config: Config, path) -> None:
    """A UserError naming every model / optim / data setting of `config` that contradicts the run's `saved` one."""
    wrong = [d for d in _differences(saved, config, ("model", "optim", "data")) if d[0] not in FREE_ON_RESUME]
    if wrong:
        said = ", ".join(f"{k}={mine} (the run has {its})" for k, its, mine in wrong)
        raise UserError(f"--resume: {path} was trained with other settings than asked for: {said}; drop them to "
                        "continue the run, or start a new run with --init-from to fine-tune with them")
