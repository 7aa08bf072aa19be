"""`fastasr index`: foreign WebDataset shards (written here with plain tarfile, as other tools write them: no
index, .txt only or NeMo-style .json) get an index.json, a durations file and a rejected.tsv that account for
every KEY group; durations are the audio headers' frames / samplerate; bad invocations are one line, exit 2."""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
from data_shards import speech_like

from fastasr.cli import main
from fastasr.shards.index import read_rejected_tsv

SF = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16"), "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III"),
      "ogg": ("OGG", "VORBIS")}


def audio(ext: str, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> tuple[bytes, int]:
    """Encoded bytes and the number of frames written."""
    x = speech_like(seconds, sr, channels, seed)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=SF[ext][0], subtype=SF[ext][1])
    return buf.getvalue(), len(x)


def header_seconds(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def tar_members(samples: list) -> list[tuple[str, bytes]]:
    return [(f"{key}.{ext}", data) for key, members, _ in samples for ext, data in members.items()]


# Each shard: (key, {ext: bytes}, expected normalised text or the reject reason).
def txt_shards(root: Path) -> dict[str, list]:
    flac, n_flac = audio("flac", 0.7, 22050, 2, 1)
    wav, n_wav = audio("wav", 0.5, 8000, 1, 2)
    opus, _ = audio("opus", 0.9, 48000, 2, 3)
    mp3, _ = audio("mp3", 1.1, 16000, 1, 4)
    mp3b, _ = audio("mp3", 0.6, 16000, 1, 5)
    ogg, _ = audio("ogg", 0.8, 16000, 1, 6)
    t = str.encode
    shards = {
        "txt-000000.tar": [
            ("set.v2/a/utt0", {"flac": flac, "txt": t("Мама мыла раму!\n")}, "мама мыла раму"),
            ("set.v2/a/utt1", {"wav": wav, "txt": t("Ёлка-палка, ель.")}, "елкапалка ель"),
            ("set.v2/a/utt2", {"opus": opus, "txt": t("в 1990 году")}, "digits"),
            ("set.v2/a/utt3", {"mp3": mp3}, "no_txt"),
            ("set.v2/a/utt4", {"flac": b"RIFF not really audio" * 20, "txt": t("шум")}, "bad_audio"),
            ("set.v2/a/utt5", {"flac": flac, "wav": wav, "txt": t("два файла")}, "many_audio"),
            ("set.v2/a/utt6", {"mp3": mp3b, "txt": t("Солнце  светит")}, "солнце светит"),
            ("set.v2/a/utt7", {"wav": wav, "txt": t("хорошо"), "json": b"{broken"}, "bad_json"),  # the loader too
        ],
        "txt-000001.tar": [
            ("b/utt0", {"ogg": ogg, "txt": t("тихо шумит лес")}, "тихо шумит лес"),
            ("b/utt1", {"opus": opus, "txt": t("Над полем — тихо.")}, "над полем тихо"),
        ],
        "txt-000002.tar": [("c/utt0", {"wav": wav, "txt": t("утром")}, "утром")],  # the val split
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, samples in shards.items():
        write_tar(root / name, tar_members(samples))
    return {"shards": shards, "exact": {"set.v2/a/utt0": n_flac / 22050, "set.v2/a/utt1": n_wav / 8000}}


def nemo_shard(path: Path) -> list:
    flac, _ = audio("flac", 0.4, 16000, 1, 7)
    opus, _ = audio("opus", 1.3, 16000, 1, 8)
    wav, _ = audio("wav", 0.6, 16000, 1, 9)
    j = lambda **kw: json.dumps(kw, ensure_ascii=False).encode()  # noqa: E731
    samples = [
        ("n0", {"flac": flac, "json": j(text="Ярко светит", duration=header_seconds(flac))}, "ярко светит"),
        ("n1", {"opus": opus, "json": j(text="над полем", duration=header_seconds(opus) + 0.5)},  # json is off
         "над полем"),
        ("n2", {"wav": wav, "json": j(duration=0.6), "txt": b"no json text"}, "no_text_field"),
        ("n3", {"wav": wav, "json": b"{not json"}, "bad_json"),
    ]
    write_tar(path, tar_members(samples))
    return samples


def _usable(want: str) -> bool:
    return not want.isascii()  # expected texts are Cyrillic; reasons are ASCII tags


def durations_of(samples: list) -> list:
    return [header_seconds(next(m[e] for e in m if e in SF)) if _usable(want) else None for _, m, want in samples]


def index_cli(*args) -> int:
    return main(["index", "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("index")
    out = tmp / "A"
    info = txt_shards(out / "shards")  # under DIR: named relative to it
    nemo = nemo_shard(tmp / "nemo-000000.tar")  # outside DIR: named by its absolute path
    return {"tmp": tmp, "out": out, "nemo": nemo, **info}


@pytest.fixture(scope="module")
def txt_index(made):
    out = made["out"]
    assert index_cli(out / "shards" / "txt-{000000..000001}.tar", "--out", out / "index.json", "--workers", 2) == 0
    return json.loads((out / "index.json").read_text(encoding="utf-8"))


def test_txt_shards_every_group_accounted(made, txt_index):
    shards = made["shards"]
    train = txt_index["splits"]["train"]
    assert txt_index["format"] == "fastasr-shards/1"
    assert txt_index["origin"] == {"kind": "webdataset", "transcript": "txt", "normalized": False}
    assert txt_index["seed"] is None and txt_index["split_fractions"] is None and txt_index["group_by"] is None
    assert set(txt_index["splits"]) == {"train"} and train["durations"] == "durations-train.json"
    assert [s["path"] for s in train["shards"]] == ["shards/txt-000000.tar", "shards/txt-000001.tar"]

    durations = json.loads((made["out"] / "durations-train.json").read_text())
    assert durations["format"] == "fastasr-durations/1" and durations["split"] == "train"
    total = 0.0
    for entry in train["shards"]:
        samples = shards[entry["path"].split("/")[-1]]
        want = durations_of(samples)
        assert durations["shards"][entry["path"]] == want  # exact: JSON floats round-trip
        usable = [d for d in want if d is not None]
        assert entry["groups"] == len(samples) and entry["samples"] == len(usable)
        assert entry["seconds"] == pytest.approx(sum(usable), abs=1e-3)
        total += sum(usable)
    # flac / wav headers give exactly the frames written
    first = durations["shards"]["shards/txt-000000.tar"]
    assert first[0] == made["exact"]["set.v2/a/utt0"] and first[1] == made["exact"]["set.v2/a/utt1"]

    rows = read_rejected_tsv(made["out"] / "rejected.tsv")
    assert {(r[0], r[1]) for r in rows} == {
        ("shards/txt-000000.tar#set.v2/a/utt2", "digits"),
        ("shards/txt-000000.tar#set.v2/a/utt3", "no_txt"),
        ("shards/txt-000000.tar#set.v2/a/utt4", "bad_audio"),
        ("shards/txt-000000.tar#set.v2/a/utt5", "many_audio"),
        ("shards/txt-000000.tar#set.v2/a/utt7", "bad_json"),
    }
    assert len(rows) == 5
    counts = {"bad_audio": 1, "bad_json": 1, "digits": 1, "many_audio": 1, "no_txt": 1}
    assert train["rejected"] == txt_index["rejected"] == counts
    assert train["samples"] == 5 and train["seconds"] == pytest.approx(total, abs=1e-3)
    assert txt_index["totals"] == {"input_rows": 10, "samples": 5, "seconds": train["seconds"], "rejected": 5,
                                   "unreadable_shards": 0}
    assert txt_index["listing_rows"] == 10


def test_text_options_change_what_is_usable(made, tmp_path):
    out = tmp_path / "digits"
    assert index_cli(made["out"] / "shards" / "txt-000000.tar", "--out", out / "index.json", "--keep-digits") == 0
    index = json.loads((out / "index.json").read_text())
    assert index["text"]["keep_digits"] and "0123456789" in index["text"]["alphabet"]
    assert "digits" not in index["rejected"] and index["splits"]["train"]["samples"] == 4
    # a shard outside DIR is named by its absolute path (the loader resolves relative names against DIR)
    assert index["splits"]["train"]["shards"][0]["path"] == str(made["out"] / "shards" / "txt-000000.tar")


def test_json_transcripts_and_untrusted_json_durations(made, caplog):
    out = made["tmp"] / "B"
    shard = made["tmp"] / "nemo-000000.tar"
    with caplog.at_level("WARNING", logger="fastasr.index"):
        assert index_cli(shard, "--out", out / "index.json", "--transcript", "json:text") == 0
    index = json.loads((out / "index.json").read_text())
    train = index["splits"]["train"]
    assert index["origin"]["transcript"] == "json:text"
    assert json.loads((out / "durations-train.json").read_text())["shards"] == {str(shard): durations_of(made["nemo"])}
    assert train["rejected"] == {"bad_json": 1, "no_text_field": 1} and train["samples"] == 2
    assert train["warnings"]["json_duration_mismatch"] == 1  # n1's json says 0.5 s more than its header
    assert any("n1" in r.getMessage() and "10 ms" in r.getMessage() for r in caplog.records)
    rows = read_rejected_tsv(out / "rejected.tsv")
    assert sorted((r[0], r[1]) for r in rows) == [(f"{shard}#n2", "no_text_field"), (f"{shard}#n3", "bad_json")]


def test_pipe_source_reads_the_same(made, tmp_path):
    path = made["out"] / "shards" / "txt-000000.tar"
    url = f"pipe:cat {path}"
    assert index_cli(url, "--out", tmp_path / "index.json") == 0
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["splits"]["train"]["shards"][0]["path"] == url
    durations = json.loads((tmp_path / "durations-train.json").read_text())["shards"]
    assert durations == {url: durations_of(made["shards"]["txt-000000.tar"])}
    assert {r[0] for r in read_rejected_tsv(tmp_path / "rejected.tsv")} == {
        f"{url}#set.v2/a/utt{i}" for i in (2, 3, 4, 5, 7)}


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with HTTP Range support (fsspec reads remote files in ranged blocks)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        spec = self.headers.get("Range")
        start, end = 0, len(data) - 1
        if spec:
            a, b = spec.split("=")[1].split("-")
            start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
        self.send_response(206 if spec else 200)
        self.send_header("Content-Length", str(end - start + 1))
        if spec:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start : end + 1])


def test_http_shards_with_brace_pattern(made, tmp_path):
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")  # fsspec's http(s) transport
    handler = lambda *a, **kw: RangeHandler(*a, directory=str(made["out"] / "shards"), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert index_cli(f"{base}/txt-{{000000..000001}}.tar", "--out", tmp_path / "index.json", "--workers", 2) == 0
    finally:
        server.shutdown()
    durations = json.loads((tmp_path / "durations-train.json").read_text())["shards"]
    assert durations == {f"{base}/txt-{i:06d}.tar": durations_of(made["shards"][f"txt-{i:06d}.tar"]) for i in (0, 1)}


def test_unreadable_shards_are_reported_and_left_out(made, tmp_path, caplog):
    good = made["out"] / "shards" / "txt-000001.tar"
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])  # ends inside a member
    damaged = bytearray(data)
    second = data.index(b"b/utt1.opus")  # that member's header: tarfile would stop there without a word
    damaged[second : second + 512] = b"\x7f" * 512
    (tmp_path / "damaged.tar").write_bytes(bytes(damaged))
    (tmp_path / "boundary.tar").write_bytes(data[:second])  # cut between members: tarfile alone sees a whole tar
    urls = [good, tmp_path / "cut.tar", tmp_path / "damaged.tar", tmp_path / "boundary.tar", "pipe:false"]
    with caplog.at_level("WARNING", logger="fastasr.index"):
        assert index_cli(*urls, "--out", tmp_path / "out" / "index.json", "--workers", 1) == 0  # in-process
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    train = index["splits"]["train"]
    assert [s["path"] for s in train["shards"]] == [str(good)]
    assert [u["path"] for u in train["unreadable"]] == [str(tmp_path / n) for n in ("cut.tar", "damaged.tar",
                                                                                    "boundary.tar")] + ["pipe:false"]
    assert "after the end of the archive" in train["unreadable"][1]["error"]
    assert "without its end-of-archive blocks" in train["unreadable"][2]["error"]
    assert "exit status 1" in train["unreadable"][3]["error"]
    assert index["totals"]["unreadable_shards"] == 4 and index["totals"]["samples"] == 2
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 4


def test_second_split_is_added_and_settings_must_agree(made, txt_index, capsys):
    out = made["out"]
    before = (out / "durations-train.json").read_bytes()
    val_shard = out / "shards" / "txt-000002.tar"
    assert index_cli(val_shard, "--out", out / "index.json", "--split", "val") == 0
    index = json.loads((out / "index.json").read_text())
    assert list(index["splits"]) == ["train", "val"]
    assert index["splits"]["train"] == txt_index["splits"]["train"]
    assert index["splits"]["val"]["shards"] == [{"path": "shards/txt-000002.tar", "samples": 1, "groups": 1,
                                                 "seconds": round(durations_of(made["shards"]["txt-000002.tar"])[0],
                                                                  3)}]
    assert index["totals"]["input_rows"] == 11 and index["totals"]["samples"] == 6
    assert (out / "durations-train.json").read_bytes() == before
    assert json.loads((out / "durations-val.json").read_text())["split"] == "val"
    assert len(read_rejected_tsv(out / "rejected.tsv")) == 5  # train's rows kept
    capsys.readouterr()
    refusals = [
        ([val_shard, "--split", "val", "--keep-latin"], "text settings"),
        ([val_shard, "--split", "val", "--transcript", "json:text"], "--transcript txt"),
        ([out / "shards" / "txt-000000.tar", "--split", "val"], "already in split 'train'"),
    ]
    for args, says in refusals:
        assert index_cli(*args, "--out", out / "index.json") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fastasr index: error:") and says in err, err
    assert json.loads((out / "index.json").read_text()) == index  # nothing written by a refused run


@pytest.mark.parametrize("args, says", [
    (["{missing}", "--out", "{tmp}/o/index.json"], "do not exist"),
    (["{shard}", "--out", "{tmp}/o/index.json", "--transcript", "json"], "--transcript"),
    (["{shard}", "--out", "{tmp}/o/index.json", "--transcript", "yaml:text"], "--transcript"),
    (["{shard}", "--out", "{tmp}/o/shards.json"], "DIR/index.json"),
    (["{shard}", "--out", "{tmp}/o/index.json", "--split", "dev"], "--split"),
    (["{shard}", "{shard}", "--out", "{tmp}/o/index.json"], "given twice"),
    (["{shard}"], "--out"),
    (["--out", "{tmp}/o/index.json"], "SHARD_URL"),
])
def test_bad_invocations_are_one_line_exit_2(made, tmp_path, capsys, args, says):
    names = {"missing": tmp_path / "nope-{0..3}.tar", "tmp": tmp_path, "shard": made["out"] / "shards" /
             "txt-000000.tar"}
    assert main(["index", *(a.format(**names) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastasr index: error:") and says in err, err
    assert not (tmp_path / "o").exists()


def test_summary_names_the_unusable_and_a_rerun_writes_the_same(made, tmp_path, capsys):
    args = ["index", str(made["out"] / "shards" / "txt-000000.tar"), "--out", str(tmp_path / "index.json")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "8 samples read = 3 usable" in text and "5 unusable" in text and "0 unreadable" in text
    assert all(reason in text for reason in ("digits", "no_txt", "bad_audio", "many_audio", "bad_json"))
    names = ("index.json", "durations-train.json", "rejected.tsv")
    first = [(tmp_path / n).read_bytes() for n in names]
    assert main(args) == 0  # the same split again: replaced, byte for byte the same
    assert [(tmp_path / n).read_bytes() for n in names] == first
    twin = ("durations-train.npy", "durations-train.bin.json")  # the table's binary twin (shards.durations_bin)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + twin)  # no temporary files left behind


def test_loader_reads_a_foreign_index(made, txt_index):
    from fastasr.data import build_loader

    shards = made["shards"]
    want = {key: (text, header_seconds(next(m[e] for e in m if e in SF)), next(m[e] for e in m if e in SF))
            for name in ("txt-000000.tar", "txt-000001.tar") for key, m, text in shards[name] if _usable(text)}
    got = Counter()
    loader = build_loader(made["out"], "train", max_batch_seconds=4.0, num_workers=0)
    for batch in loader:
        for i, key in enumerate(batch.keys):
            got[key] += 1
            text, seconds, data = want[key]
            assert batch.texts[i] == text
            info = sf.info(io.BytesIO(data))
            assert abs(int(batch.audio_lens[i]) - info.frames * 16000 / info.samplerate) <= 1, key
    assert got == Counter({key: 1 for key in want})  # and no unusable group
    assert loader.stats[0]["samples"] == len(want)


def test_stats_reads_a_foreign_index(made, txt_index, tmp_path):
    from fastasr.cli import main

    shards = made["shards"]
    want = [(header_seconds(next(m[e] for e in m if e in SF)), text)
            for name in ("txt-000000.tar", "txt-000001.tar") for key, m, text in shards[name] if _usable(text)]
    assert main(["stats", str(made["out"]), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    train = summary["splits"]["train"]
    assert train["samples"] == len(want)
    assert train["words"] == sum(len(text.split()) for _, text in want)
    assert abs(train["hours"] - sum(s for s, _ in want) / 3600) < 1e-9


def test_foreign_shards_train_evaluate_after_fastasr_index(tmp_path):
    """Shards of audio + txt only (no json, no index), as another tool writes them: `fastasr index` each split,
    then fastasr trains on them and evaluates them like its own."""
    from asr_helpers import make_config, make_shards

    from fastasr.training.loop import train

    own = tmp_path / "own"
    make_shards(own)
    foreign = tmp_path / "foreign"
    for split in ("train", "val"):
        for src in sorted((own / split).glob("*.tar")):
            with tarfile.open(src) as tar:
                members = [(m.name, tar.extractfile(m).read()) for m in tar if not m.name.endswith(".json")]
            (foreign / "wds").mkdir(parents=True, exist_ok=True)
            write_tar(foreign / "wds" / f"{split}-{src.stem}.tar", members)
        pattern = "train-shard-{000000..000002}.tar" if split == "train" else "val-shard-000000.tar"
        assert index_cli(foreign / "wds" / pattern, "--split", split, "--out", foreign / "index.json") == 0
    summary = train(foreign, tmp_path / "run", make_config(max_steps=3))
    assert summary["steps"] == 3 and summary["val_cer"] is not None
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(foreign), "--split", "val",
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["cer"] and 0.0 <= metrics["wer"]
    rows = (tmp_path / "eval" / "utterances.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 4  # header + make_shards' 4 val utterances, none lost for lack of a json member
