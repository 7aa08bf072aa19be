"""Tokenizers: char / BPE / unigram round trips on Russian text, deterministic SentencePiece training, pickling
and the checkpoint dict, blank-free ids; and a BPE run end to end: train → eval → transcribe → export → the
runtime's text equal to the checkpoint's, --resume / --init-from / average with tokenizers, old checkpoints, bad
specs, two torchrun ranks."""

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from asr_helpers import make_shards
from export_helpers import save_checkpoint, talkative_model, write_audio

from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.inference.transcribe import transcribe
from fastasr.model.config import ModelConfig
from fastasr.model.transducer import Transducer
from fastasr.runtime import transcribe as runtime_transcribe
from fastasr.runtime.model_dir import read_model_dir
from fastasr.text.normalization import DEFAULT_TEXT
from fastasr.text.tokenizer import (BLANK_PIECE, MODEL_TYPES, CharTokenizer, PieceDecoder, SentencePieceTokenizer,
                                    from_dict, parse_spec, tokenizer_of, train_sentencepiece)
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.tokenizer import make_tokenizer
from fastasr.training.warm_start import init_weights

ROOT = Path(__file__).resolve().parents[2]
ALPHABET = DEFAULT_TEXT.alphabet
WORDS = """мама мыла раму утром солнце светит ярко над полем тихо шумит лес все хорошо каждый охотник желает знать
где сидит фазан широкая электрификация южных губерний даст мощный толчок подъему сельского хозяйства""".split()
PANGRAM = "съешь же еще этих мягких французских булок да выпей чаю"  # every letter but ё
SYLLABLES = "ка ли ро ми на ту зе во пра стен ный ско дру жба ще лю бя ход ить ешь".split()


def sentences(n: int = 2000, seed: int = 0) -> list[str]:
    """Russian-looking text: the words above and 300 made of syllables (so a unigram model has pieces to find)."""
    rng = random.Random(seed)
    words = WORDS + ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def models():
    texts = sentences()
    return {t: SentencePieceTokenizer(train_sentencepiece(texts, t, 120, ALPHABET, seed=3), t) for t in MODEL_TYPES}


@pytest.mark.parametrize("kind", ["char", *MODEL_TYPES])
def test_round_trip_and_no_blank(kind, models):
    tok = CharTokenizer(ALPHABET) if kind == "char" else models[kind]
    for text in [PANGRAM, *sentences(50, seed=1)]:
        ids = tok.encode(text)
        assert ids and all(0 < i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    if kind != "char":  # pieces, not only characters; every letter is a piece, however rare
        assert len(tok.encode(" ".join(WORDS))) < len(" ".join(WORDS))
        assert set(ALPHABET.replace(" ", "")) <= {p.lstrip("▁") for p in tok.pieces()}
        assert tok.pieces()[:2] == [BLANK_PIECE, "<unk>"] and tok.vocab_size == 121
    with pytest.raises(ValueError):
        tok.encode("hello мир")


def test_training_is_deterministic():
    texts = sentences(seed=5)
    for kind in MODEL_TYPES:
        a = train_sentencepiece(texts, kind, 90, ALPHABET, seed=11)
        assert train_sentencepiece(list(texts), kind, 90, ALPHABET, seed=11) == a
        assert train_sentencepiece(texts[:1000], kind, 90, ALPHABET, seed=11) != a  # other data, other model


def test_pickle_and_dict_round_trip(models):
    for tok in (CharTokenizer(ALPHABET), *models.values()):
        for copy in (pickle.loads(pickle.dumps(tok)), from_dict(tok.to_dict())):
            assert type(copy) is type(tok) and copy.identity() == tok.identity()
            assert copy.encode(PANGRAM) == tok.encode(PANGRAM) and copy.pieces() == tok.pieces()
    d = models["bpe"].to_dict()
    assert d["type"] == "sentencepiece" and d["model_type"] == "bpe" and d["vocab_size"] == 120
    assert isinstance(d["model"], bytes)


def test_piece_decoder_is_the_tokenizer_decode(models):
    """The runtime's decoder (the pieces only, no sentencepiece) against the tokenizer, on arbitrary id sequences:
    silent ids (blank, <unk>) anywhere, pieces in any order."""
    rng = random.Random(0)
    for tok in models.values():
        dec = PieceDecoder(tok.pieces(), tok.silent_ids)
        assert tok.silent_ids == {0, 1}
        for _ in range(200):
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 12))]
            text = dec.decode(ids)
            assert text == tok.decode(ids) and text == " ".join(text.split())
        # And the real thing: sentencepiece's own decoder on what the model writes.
        sp = spm.SentencePieceProcessor(model_proto=tok.model)
        ids = tok.encode(PANGRAM)
        assert dec.decode(ids) == sp.decode([i - 1 for i in ids]) == PANGRAM


def test_old_alphabet_only_checkpoints_are_char():
    assert tokenizer_of({"alphabet": ALPHABET}).identity() == ("char", ALPHABET)
    with pytest.raises(UserError, match="holds no tokenizer"):
        tokenizer_of({"model": {}}, "x.pt")


@pytest.mark.parametrize("spec", ["bpe:0", "bpe:x", "unigram:", "bpe:-3", "foo", "BPE:64", "missing.model"])
def test_bad_specs(spec):
    with pytest.raises(UserError, match="--tokenizer .*accepted: char, bpe:N, unigram:N"):
        parse_spec(spec)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out)
    return out


def test_user_model_files(shards, tmp_path, models):
    good = tmp_path / "good.model"
    good.write_bytes(models["unigram"].model)
    tok = make_tokenizer(str(good), shards, tmp_path / "run", seed=0)
    assert tok.model == good.read_bytes() == (tmp_path / "run" / "tokenizer.model").read_bytes()
    assert tok.model_type == "unigram"
    # SentencePiece's default character_coverage (0.9995) leaves rare letters out: they would be <unk>. Refused.
    narrow = tmp_path / "narrow.model"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences()), model_prefix=str(narrow.with_suffix("")),
                                   vocab_size=60, model_type="bpe", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(narrow))
    left_out = "".join(ch for ch in ALPHABET.strip() if sp.unk_id() in sp.encode(ch))
    assert left_out
    with pytest.raises(UserError, match=f"does not cover the alphabet: '{left_out}' would be <unk>"):
        make_tokenizer(str(narrow), shards, tmp_path / "run2", seed=0)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\xff not a model")
    with pytest.raises(UserError, match="not a SentencePiece model"):
        make_tokenizer(str(garbage), shards, tmp_path / "run2", seed=0)


# --- a BPE run end to end --------------------------------------------------------------------------------------------

CPU = ["train.device=cpu", "train.progress=false", "data.max_batch_seconds=2.5", "data.val_utterances=2",
       "model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.pred_embed=16", "model.pred_hidden=32",
       "model.joint_dim=24", "model.subsampling_channels=8", "train.log_every=1", "train.ckpt_every=2",
       "train.keep=3", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def bpe_run(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("bpe") / "run"
    # One loader worker process: the tokenizer travels into it pickled.
    argv = ["train", "--data", str(shards), "--run-dir", str(run), "--tokenizer", "bpe:48", "--max-steps", "3",
            "data.num_workers=1", *CPU]
    assert main(argv) == 0
    return run


def test_bpe_run_carries_its_tokenizer(bpe_run, shards, tmp_path):
    ckpt = ckpt_io.load(bpe_run / "last.pt")
    tok = tokenizer_of(ckpt)
    assert tok.kind == "sentencepiece" and tok.vocab_size == 49 and "alphabet" not in ckpt
    assert ckpt["config"]["model"]["vocab_size"] == 49
    assert (bpe_run / "tokenizer.model").read_bytes() == tok.model
    record = json.loads((bpe_run / "config.json").read_text())["tokenizer"]
    assert record == {"spec": "bpe:48", "type": "sentencepiece", "vocab_size": 49, "model_type": "bpe",
                      "pieces": 48, "model": "tokenizer.model", "sha256": tok.sha256}
    # The same transcripts train the same model: a second run's is byte-identical (reproducible runs).
    again = make_tokenizer("bpe:48", shards, tmp_path / "again", seed=1234)
    assert again.model == tok.model


def test_bpe_checkpoint_evaluates_and_transcribes(bpe_run, shards, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(bpe_run / "last.pt"), "--data", str(shards), "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["utterances"] == 5 and metrics["tokenizer"].startswith("bpe:48 SentencePiece")
    audio = [write_audio(tmp_path / f"a{i}.wav", 0.8 + i / 2, i) for i in range(2)]
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", str(bpe_run / "last.pt"), "--device", "cpu", *map(str, audio)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(a) for a in audio]
    assert [line.split("\t", 1)[1] for line in lines] == [t for _, t in transcribe(bpe_run / "last.pt", audio,
                                                                                  device="cpu")]


def test_bpe_export_transcribes_like_the_checkpoint(bpe_run, tmp_path):
    """A talkative model (tests/export_helpers.py) on the run's BPE tokenizer: non-empty, audio-dependent texts of
    several pieces, decoded by the runtime from tokenizer.json alone."""
    tok = tokenizer_of(ckpt_io.load(bpe_run / "last.pt"))
    ckpt = save_checkpoint(talkative_model(vocab_size=tok.vocab_size), tmp_path / "talk.pt", tokenizer=tok)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    spec = json.loads((tmp_path / "exp" / "tokenizer.json").read_text())
    assert spec["type"] == "sentencepiece" and spec["tokens"] == tok.pieces() and spec["silent_ids"] == [0, 1]
    assert (tmp_path / "exp" / "tokenizer.model").read_bytes() == tok.model
    assert isinstance(read_model_dir(tmp_path / "exp").tokenizer, PieceDecoder)
    audio = [write_audio(tmp_path / f"b{i}.wav", 1.0 + i / 3, 10 + i) for i in range(4)]
    want = transcribe(ckpt, audio, device="cpu")
    assert runtime_transcribe(tmp_path / "exp", audio) == want
    texts = [t for _, t in want]
    assert all(texts) and len(set(texts)) == len(texts)
    assert set("".join(texts)) <= set(ALPHABET) and "▁" not in "".join(texts)


def test_resume_keeps_the_tokenizer_and_refuses_another(bpe_run, shards, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(bpe_run, run)
    common = ["train", "--data", str(shards), "--run-dir", str(run), "--resume", "--max-steps", "4", *CPU,
              "data.num_workers=0"]
    for spec in ("char", "bpe:64", "unigram:48"):
        assert main([*common, "--tokenizer", spec]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"not --tokenizer {spec}" in err, err
    assert main([*common, "--tokenizer", "bpe:48"]) == 0  # what the run has: accepted (as is no --tokenizer)
    resumed = ckpt_io.load(run / "last.pt")
    assert resumed["step"] == 4 and resumed["tokenizer"] == ckpt_io.load(bpe_run / "last.pt")["tokenizer"]


def test_init_from_and_average_compare_tokenizers(bpe_run, tmp_path, capsys):
    source = ckpt_io.load(bpe_run / "last.pt")
    model = Transducer(ModelConfig.from_dict(source["config"]["model"]))
    assert init_weights(model, source, tokenizer_of(source), "src.pt") == []
    lines = init_weights(model, source, CharTokenizer(ALPHABET), "src.pt")
    assert len(lines) == 1 and "its tokenizer, bpe:48 SentencePiece" in lines[0] and "re-initialised" in lines[0]
    # Two step checkpoints of one shape but other tokenizers cannot be averaged.
    run = tmp_path / "mixed"
    run.mkdir()
    steps = ckpt_io.step_checkpoints(bpe_run)
    shutil.copy(steps[-2], run / steps[-2].name)
    other = ckpt_io.load(steps[-1])
    other["tokenizer"] = SentencePieceTokenizer(train_sentencepiece(sentences(), "bpe", 48, ALPHABET, seed=0),
                                                "bpe").to_dict()
    torch.save(other, run / steps[-1].name)
    assert main(["average", str(run), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be averaged" in err and "tokenizer" in err
    assert main(["average", str(bpe_run), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    assert tokenizer_of(ckpt_io.load(tmp_path / "avg.pt")).identity() == tokenizer_of(source).identity()


@pytest.mark.parametrize("spec,message", [
    ("bpe:0", "--tokenizer bpe:0: N must be"), ("bpe:x", "--tokenizer bpe:x: N must be"),
    ("foo", "--tokenizer 'foo': not understood"), ("nowhere.model", "--tokenizer nowhere.model: no such file"),
    ("bpe:5000", "--tokenizer bpe:5000: 5000 pieces are more than these transcripts make"),
    ("unigram:20", "--tokenizer unigram:20: 20 pieces cannot hold the alphabet"),
])
def test_bad_tokenizer_on_the_command_line_is_one_line(spec, message, shards, tmp_path, capsys):
    argv = ["train", "--data", str(shards), "--run-dir", str(tmp_path / "run"), "--tokenizer", spec,
            "--max-steps", "1", *CPU, "data.num_workers=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # One error line (after the log line saying what is being trained, for the sizes only training can judge).
    errors = [line for line in err.splitlines() if " error: " in line]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, err
    assert message in errors[0] and "accepted: char, bpe:N" in errors[0], err


def test_torchrun_rank_0_trains_and_the_other_ranks_get_its_model(bpe_run, shards, tmp_path):
    """Two gloo ranks: rank 0 trains the SentencePiece model, rank 1 receives it (DDP would refuse other output
    shapes; equal weight digests show the ranks trained one model), and it is the single-process run's model."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "fastasr", "train", "--data", str(shards), "--run-dir", str(run), "--tokenizer", "bpe:48",
           "--max-steps", "1", *CPU, "data.num_workers=0", "data.max_batch_seconds=2.0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = ckpt_io.load(run / "last.pt")
    assert len(set(ckpt["rank_weight_digests"])) == 1 and len(ckpt["data"]) == 2
    assert ckpt["tokenizer"] == ckpt_io.load(bpe_run / "last.pt")["tokenizer"]
    assert proc.stderr.count("training SentencePiece bpe:48") == 1  # once, on rank 0
