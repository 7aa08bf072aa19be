"""`fastasr eval`: metrics equal jiwer computed independently on the per-utterance TSV."""

import csv
import json
from dataclasses import replace

import jiwer
import pytest
import torch
from asr_helpers import make_shards, tiny_model

from fastasr.cli import main
from fastasr.text.normalization import DEFAULT_TEXT
from fastasr.text.scoring import score
from fastasr.training.checkpoints import save_atomic
from fastasr.training.config import preset


def test_score_definitions():
    m = score(["мама мыла раму", "лес"], ["мама мыла рамы утром", "лес"])
    assert m["wer"] == pytest.approx(2 / 4)  # one substitution, one insertion over four reference words
    assert m["accuracy"] == pytest.approx(3 / 4)  # hits / reference words: insertions do not count
    assert m["cer"] == pytest.approx(jiwer.cer(["мама мыла раму", "лес"], ["мама мыла рамы утром", "лес"]))
    assert score(["Ёлка  в лесу"], ["елка в лесу"])["wer"] == 0.0  # same normalisation on both sides


def test_eval_numbers_equal_jiwer_on_tsv(tmp_path, capsys):
    data = tmp_path / "shards"
    make_shards(data)
    model = tiny_model()
    with torch.no_grad():
        model.joiner.out.bias[1:] += 1.5
    ckpt = tmp_path / "model.pt"
    save_atomic({"config": replace(preset("tiny"), model=model.config).to_dict(),
                 "alphabet": DEFAULT_TEXT.alphabet, "model": model.state_dict()}, ckpt)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test", "--out", str(out),
                 "--device", "cpu", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "utterances.tsv", encoding="utf-8"), delimiter="\t",
                               quoting=csv.QUOTE_NONE))
    assert len(rows) == metrics["utterances"] == 5
    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    words = jiwer.process_words(refs, hyps)
    assert metrics["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert metrics["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert metrics["accuracy"] == pytest.approx(words.hits / sum(len(r.split()) for r in refs))
    assert sum(int(r["errors"]) for r in rows) == words.substitutions + words.deletions + words.insertions
    chars = jiwer.process_characters(refs, hyps)  # per-utterance character errors add up to the corpus CER's
    assert sum(int(r["char_errors"]) for r in rows) == chars.substitutions + chars.deletions + chars.insertions
    assert all(float(r["cer"]) == pytest.approx(jiwer.cer(r["reference"], r["hypothesis"]), abs=1e-4) for r in rows)
    assert f"{metrics['wer']:.2%}" in printed and f"{metrics['cer']:.2%}" in printed
