"""The command line's contract for mistakes: one stderr line naming the option or file, exit 2, no traceback
(`--debug` shows it); `--version`; defaults in every --help; the fastasr logger on stderr."""

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from asr_helpers import make_shards
from corpus_helpers import make_corpus

from fastasr import __version__
from fastasr.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d INFO fastasr\.shard: ")


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    make_shards(tmp / "shards")
    make_corpus(tmp / "corpus", 2)
    (tmp / "model.pt").write_bytes(b"not looked at: the split is checked first")
    return {"tmp": tmp, "shards": tmp / "shards", "corpus": tmp / "corpus", "ckpt": tmp / "model.pt",
            "missing": tmp / "missing", "run": tmp / "run", "out": tmp / "out"}


BAD = [  # (arguments, what the one line must name)
    ("train --data {missing} --run-dir {run}", "--data"),
    ("train --data {shards} --run-dir {run} model.dmodel=256", "model.d_model"),  # with the right name
    ("train --data {shards} --run-dir {run} optim.warmup_steps=1e3", "optim.warmup_steps"),
    ("train --data {shards} --run-dir {run} --max-steps -5", "--max-steps"),
    ("train --data {shards} --run-dir {run} --max-minutes 0", "--max-minutes"),
    ("train --data {shards} --run-dir {run} train.val_every=0", "train.val_every"),
    ("train --data {shards} --run-dir {run} modle.d_model=3", "modle"),
    ("train --data {shards} --run-dir {run} --preset huge", "--preset"),
    ("train --data {shards}", "--run-dir"),
    ("train --data {corpus} --run-dir {run}", "index.json"),
    ("eval --checkpoint {ckpt} --data {shards} --split tset", "--split"),
    ("eval --checkpoint {missing} --data {shards}", "--checkpoint"),
    ("eval --checkpoint {ckpt} --data {shards} --beam 0", "--beam"),
    ("shard {missing} {out}", "SOURCE"),
    ("shard {corpus} {out} --min-duration 5 --max-duration 1", "--max-duration"),
    ("shard {corpus} {out} --max-cps 0.5", "--max-cps"),
    ("shard {corpus} {out} --split 1,2", "--split"),
    ("shard {corpus} {out} --part 0/2", "--part"),
    ("shard {corpus} {out} --shard-size 0", "--shard-size"),
    ("shard {corpus} {out} --group-by (", "--group-by"),
    ("shard {corpus} {out} --group-by speaker", "--group-by speaker"),
    ("shard {corpus} {out} --manifest {missing}", "manifest"),
    ("shard {corpus}", "OUT"),
    ("shard --merge {missing}", "--merge"),
    ("stats {missing}", "PATH"),
    ("transcribe", "are required"),
    ("frobnicate", "COMMAND"),
    ("--log-level loud stats {shards}", "--log-level"),
]


@pytest.mark.parametrize("line,names", BAD, ids=[b[0].split(" {")[0] + " … " + b[1] for b in BAD])
def test_mistakes_are_one_line_and_exit_2(places, capsys, line, names):
    argv = [a.format(**places) for a in line.split()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # a mistake found after the listing (no row has a speaker) may follow the listing's log line
    lines = [x for x in err.strip().splitlines() if not LOG_LINE.match(x) or "listed" not in x]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fastasr") and ": error: " in lines[0] and names in lines[0], lines[0]


def test_debug_shows_the_traceback_too(places, capsys):
    assert main(["train", "--data", str(places["shards"]), "--run-dir", str(places["run"]), "--debug",
                 "model.dmodel=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UserError" in err and err.strip().splitlines()[-1].startswith("fastasr train:")


def test_the_run_dir_and_its_aliases(places, capsys):
    from fastasr.cli import Parser
    from fastasr.commands.train import configure, resolve

    p = Parser(prog="fastasr train")
    configure(p)
    for flag in ("--run-dir", "--exp-dir", "--run"):
        args = p.parse_args(["--data", str(places["shards"]), flag, "r", "--max-steps", "3"])
        data, run_dir, config = resolve(args)
        assert run_dir == "r" and config.train.max_steps == 3
    assert "--run is deprecated" in capsys.readouterr().err
    assert "--run " not in p.format_help().replace("--run-dir", "")  # the old spelling is hidden


def test_version_and_defaults_in_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastasr {__version__}"
    for command, shown in (("train", "(default: tiny)"), ("eval", "(default: test)"),
                           ("shard", "(default: 0.6,0.2,0.2)"), ("transcribe", "(default:")):
        assert main([command, "--help"]) == 0
        assert shown in " ".join(capsys.readouterr().out.split()), command


def test_logging_reaches_stderr(places, capsys):
    out = places["tmp"] / "logged"
    assert main(["shard", str(places["corpus"]), str(out), "--workers", "1"]) == 0
    assert "fastasr.shard: listed 2 input rows" in capsys.readouterr().err
    logging.getLogger("fastasr.data").info("rank 0 epoch 0: 3 batches")  # how the loader reports an epoch
    assert "rank 0 epoch 0" in capsys.readouterr().err
    assert main(["--log-level", "warning", "shard", str(places["corpus"]), str(out), "--quiet"]) == 0
    assert "listed" not in capsys.readouterr().err
    logging.getLogger("fastasr").setLevel(logging.INFO)


def test_a_real_process_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "fastasr", "shard", "/nonexistent/corpus", "/tmp/x"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "SOURCE /nonexistent/corpus" in proc.stderr
