"""An index.json is data, not commands: what its paths may name (Reach), its fields checked when it is opened, and
`fastasr stats` / `fastasr index` against hostile indexes, servers and patterns made here (127.0.0.1, tmp_path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_shards import make_utts, write_shards
from http_shards import ShardServer
from wire_helpers import SilentServer, index_copy, marker_pipe

from fastasr import sources
from fastasr.cli import main
from fastasr.errors import UserError
from fastasr.shards.index import Reach, open_index

ROOT = Path(__file__).resolve().parents[2]
R = "https://h/corpus"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach_shards")
    write_shards(out, make_utts(6, seed=3), [3, 3])
    return out


@pytest.mark.parametrize("path, url", [
    ("train/s.tar", f"{R}/train/s.tar"),
    (f"{R}/train/s.tar", f"{R}/train/s.tar"),  # an absolute URL under the prefix
    ("train/../val/s.tar", f"{R}/train/../val/s.tar"),  # stays under it
])
def test_a_url_index_names_what_lies_under_its_prefix(path, url):
    assert Reach().resolve(R, path, "index.json: f") == url
    assert Reach().resolve(R + "/", path, "index.json: f") == url


FOREIGN = ["/etc/passwd", "file:///etc/passwd", "https://elsewhere/corpus/s.tar", "http://h/corpus/s.tar",
           "s3://bucket/s.tar", "https://h/corpus-old/s.tar", "../s.tar", "train/../../s.tar", "%2e%2e/s.tar",
           "train/s.tar::file:///etc/passwd", ".", "train/..\\..\\s.tar"]


@pytest.mark.parametrize("path", FOREIGN)
def test_a_url_index_names_nothing_else_unless_the_user_opts_in(path):
    with pytest.raises(UserError, match="index.json: f: .* is not under https://h/corpus/.*--allow-foreign-paths"):
        Reach().resolve(R, path, "index.json: f")
    with pytest.raises(UserError, match="--allow-foreign-paths"):
        Reach(allow_pipe=True).resolve(R, path, "index.json: f")
    assert Reach(allow_foreign_paths=True).resolve(R, path, "f") == sources.join(R, path)


def test_a_url_index_runs_no_pipe_unless_the_user_opts_in():
    with pytest.raises(UserError, match=r"f: 'pipe:touch x' is a pipe: command.*--allow-pipe"):
        Reach().resolve(R, "pipe:touch x", "f")
    with pytest.raises(UserError, match="--allow-pipe"):
        Reach(allow_foreign_paths=True).resolve(R, "pipe:touch x", "f")
    assert Reach(allow_pipe=True).resolve(R, "pipe:touch x", "f") == "pipe:touch x"


@pytest.mark.parametrize("path", ["train/s.tar", "../elsewhere/s.tar", "/abs/s.tar", "file:///abs/s.tar",
                                  "https://elsewhere/s.tar", "pipe:cat s.tar"])
def test_a_local_index_names_what_it_likes(path, tmp_path):
    assert Reach().resolve(tmp_path, path, "f") == sources.join(tmp_path, path)


def test_stats_runs_no_pipe_a_served_index_names(shards, tmp_path, capsys):
    marker = tmp_path / "ran"
    shard = shards / "train/shard-000000.tar"

    def piped(index):
        index["splits"]["train"]["shards"][0]["path"] = marker_pipe(marker, shard)

    index_copy(shards, tmp_path / "served", piped, tables=False)
    with ShardServer(tmp_path / "served") as server:
        assert main(["stats", server.url]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "splits.train.shards[0].path" in err and "--allow-pipe" in err
        assert not marker.exists()
        assert main(["stats", server.url, "--allow-pipe", "--json", "-"]) == 0  # the user's opt-in
        assert json.loads(capsys.readouterr().out)["all"]["samples"] == 6
        assert marker.exists()
    marker.unlink()
    assert main(["stats", str(tmp_path / "served")]) == 0  # the same index, local: the user's own file
    assert marker.exists()


def test_stats_reads_no_local_file_a_served_index_names(shards, tmp_path, capsys):
    marker = tmp_path / "ran"

    def elsewhere(index):
        index["splits"]["train"]["shards"][0]["path"] = str(shards / "train/shard-000000.tar")  # absolute, local
        index["splits"]["train"]["durations"] = f"pipe:touch {marker}; cat {shards / 'durations-train.json'}"

    index_copy(shards, tmp_path / "served", elsewhere)
    with ShardServer(tmp_path / "served") as server:
        assert main(["stats", server.url]) == 2
        assert "splits.train.shards[0].path" in capsys.readouterr().err
        with pytest.raises(UserError, match="splits.train.durations: 'pipe:touch .*--allow-pipe"):
            open_index(server.url, reach=Reach(allow_foreign_paths=True))
        assert not marker.exists()
        root, _ = open_index(server.url, reach=Reach(allow_pipe=True, allow_foreign_paths=True))
        assert root == server.url


GOOD_SHARD = {"path": "train/shard-000000.tar", "samples": 3, "seconds": 2.0}


def _set(field, value):
    def edit(index):
        *parents, last = field
        target = index
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return edit


MALFORMED = [
    (_set(["splits"], ["train"]), "splits must be an object"),
    (_set(["splits", "train"], 3), "splits.train must be an object"),
    (_set(["splits", "train", "shards"], {"a": 1}), "splits.train.shards must be a list"),
    (_set(["splits", "train", "shards", 0], "train/shard-000000.tar"), "splits.train.shards[0] must be an object"),
    (_set(["splits", "train", "shards", 0, "path"], KeyError), "splits.train.shards[0].path must be a non-empty"),
    (_set(["splits", "train", "shards", 0, "path"], 7), "splits.train.shards[0].path must be a non-empty"),
    (_set(["splits", "train", "shards", 1], GOOD_SHARD), "splits.train.shards[1].path names the same shard"),
    (_set(["splits", "train", "shards", 1, "samples"], "many"), "splits.train.shards[1].samples must be an integer"),
    (_set(["splits", "train", "shards", 1, "samples"], -1), "splits.train.shards[1].samples must be an integer"),
    (_set(["splits", "train", "shards", 1, "samples"], True), "splits.train.shards[1].samples must be an integer"),
    (_set(["splits", "train", "shards", 0, "seconds"], -2.0), "splits.train.shards[0].seconds must be a number"),
    (_set(["splits", "train", "shards", 0, "groups"], 1.5), "splits.train.shards[0].groups must be an integer"),
    (_set(["splits", "train", "samples"], None), "splits.train.samples must be an integer"),
    (_set(["splits", "train", "durations"], 5), "splits.train.durations must be the name"),
    (_set(["text"], "ru"), "text must be an object"),
    (_set(["text", "alphabet"], KeyError), "text.alphabet must be a non-empty string"),
    (_set(["text", "fold_yo"], "yes"), "text.fold_yo must be true or false"),
    (_set(["origin"], {"transcript": 1}), "origin.transcript must be a string"),
    (_set(["totals", "input_rows"], "x"), "totals.input_rows must be a number"),
    (_set(["rejected"], {"digits": -3}), "rejected.digits must be an integer"),
]


@pytest.mark.parametrize("edit, says", MALFORMED, ids=[s for _, s in MALFORMED])
def test_a_malformed_index_field_is_one_line_naming_it(shards, tmp_path, capsys, edit, says):
    index_copy(shards, tmp_path, edit)
    assert main(["stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'index.json'}: {says}" in err, err


TABLES = [
    ("[1, 2]", "format None, expected 'fastasr-durations/1'"),
    ('{"format": "fastasr-durations/1", "shards": [1]}', "shards must be an object"),
    ('{"format": "fastasr-durations/1", "shards": {"train/shard-000000.tar": 1.0}}',
     "shards['train/shard-000000.tar'] must be a list"),
    ('{"format": "fastasr-durations/1", "shards": {"train/shard-000000.tar": [1.0, -0.5, 1.0]}}',
     "shards['train/shard-000000.tar'][1] must be a number of seconds"),
    ('{"format": "fastasr-durations/1", "shards": {"train/shard-000000.tar": [1.0, "2", null]}}',
     "shards['train/shard-000000.tar'][1] must be a number of seconds"),
    ('{"format": "fastasr-durations/1", "shards": {"train/shard-000000.tar": [NaN]}}',
     "shards['train/shard-000000.tar'][0] must be a number of seconds"),
    ("{not json", "cannot be read as JSON"),
]


@pytest.mark.parametrize("table, says", TABLES, ids=[s for _, s in TABLES])
def test_a_malformed_durations_table_is_one_line_naming_it(shards, tmp_path, capsys, table, says):
    index_copy(shards, tmp_path)
    (tmp_path / "durations-train.json").write_text(table)
    assert main(["stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'durations-train.json'}: " in err and says in err, err


def test_stats_of_a_server_that_never_answers_ends_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTASR_CONNECT_TIMEOUT": "1", "FASTASR_READ_TIMEOUT": "0.3"}
    with SilentServer() as server:
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "fastasr", "stats", server.url + "/corpus"], env=env,
                              capture_output=True, text=True, timeout=120)  # a hang fails here
        took = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    *retries, error = done.stderr.strip().splitlines()  # the retries are logged as warnings; the error: one line
    assert len(retries) == 3 and all(" WARNING fastasr.sources: " in line for line in retries), done.stderr
    assert error.startswith(f"fastasr stats: error: PATH {server.url}/corpus: "), error
    assert f"{server.url}/corpus/index.json cannot be read (" in error, error
    assert "Timeout" in error and "gave up after 3 retries" in error, error
    assert took < 60


def test_index_refuses_a_brace_range_with_a_digit_too_many(tmp_path, capsys):
    assert main(["index", str(tmp_path / "x-{000000000..099999999}.tar"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expands to 100,000,000 names, more than 1,000,000" in err
    assert not (tmp_path / "o").exists()
