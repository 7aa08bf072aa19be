"""tools/gpu_check.py --device cpu end to end, so the GPU proof script cannot rot between GPU sessions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_mode_runs_every_section(tmp_path):
    out = tmp_path / "x.json"
    # Section (a) runs the GPU tests wherever a GPU exists; the suite runs those itself, so leave (a) out there.
    only = "bcde" if __import__("torch").cuda.is_available() else "abcde"
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--only", only, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    sections = doc["sections"]
    assert set(sections) == set(only), sections.keys()
    for key in "bcde":
        assert sections[key]["status"] == "ok", (key, sections[key]["error"])
    if "a" in sections:
        assert sections["a"]["status"] == "skipped"

    b = sections["b"]["results"]
    for name, tol in (("fp32 chunk_size=7 vs float64", 1e-4), ("fp32 chunk_size=default vs float64", 1e-4),
                      ("bf16 chunk_size=7 vs float64", 5e-2)):
        for grad in ("loss", "enc", "pred", "weight", "bias"):
            assert 0 <= b[name][grad]["rel"] < tol, (name, grad, b[name][grad])

    c = sections["c"]["results"]
    assert set(c) == {"bench fp32", "bench bf16", "real fp32", "real bf16"}
    for key, res in c.items():
        for impl in ("fused", "fastasr"):  # fastasr: rnnt_loss on materialised logits
            assert res[impl]["peak_mb"] is None or res[impl]["peak_mb"] >= 0, (key, impl, res[impl])
            assert res[impl]["ms"] > 0, (key, impl, res[impl])

    d = sections["d"]["results"]
    assert d["cpu_ms"] > 0 and 0 <= d["max_abs_diff"] < 1e-3, d

    e = sections["e"]["results"]
    assert e["steps"] > 0 and e["throughput_audio_h_per_device_h"] > 0 and 0 <= e["data_wait_fraction"] <= 1
    assert 0 <= e["val_cer"]

    table = out.with_suffix(".md").read_text()
    assert table.startswith("| | check | result | status |")
    assert "FAIL" not in table and proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])
