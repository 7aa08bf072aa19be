"""Packaging: torch is a range users fill with their own build, the gpu extras bring NVVM, and the package runs
straight from a checkout (PYTHONPATH=repo, nothing installed), as on a GPU machine with no package index."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_requirements_leave_torch_to_the_user_and_extras_bring_nvvm():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {d.split(">")[0].split("=")[0].split("[")[0].strip(): d for d in project["dependencies"]}
    assert deps["torch"].replace(" ", "") == "torch>=2.4", deps["torch"]  # never a pin: it would replace a CUDA torch
    assert "webdataset" not in deps  # the library never imports it; tests do
    extras = project["optional-dependencies"]
    assert any("numba-cuda[cu12]" in d for d in extras["gpu"]) and any("numba-cuda[cu13]" in d for d in extras["gpu-cu13"])
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()  # the CPU wheel is pinned where it is installed


def test_runs_from_a_source_checkout_without_installing():
    # Drop the editable install's finder so only PYTHONPATH-style lookup is left.
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "import fastasr.kernels.rnnt_cpu as k, fastasr.loss\n"
            "print(k.__file__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(ROOT / "kernels" / "rnnt_cpu.py")


def test_commands_choose_passive_openmp_waiting_before_torch_loads():
    # libgomp reads OMP_WAIT_POLICY when torch loads it, so the CLI must set it before any command imports torch.
    code = ("import os, sys\n"
            "os.environ.pop('OMP_WAIT_POLICY', None)\n"
            "import fastasr.commands\n"
            "assert 'torch' not in sys.modules\n"
            "print(os.environ['OMP_WAIT_POLICY'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "PASSIVE", proc.stderr[-2000:]
    kept = subprocess.run([sys.executable, "-c", "import os, fastasr.commands; print(os.environ['OMP_WAIT_POLICY'])"],
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                             "OMP_WAIT_POLICY": "ACTIVE"})
    assert kept.stdout.strip() == "ACTIVE"


def test_every_package_folder_is_installed():
    # A folder missing from pyproject's list would be absent from a wheel (the editable install hides that).
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"fastasr." + ".".join(p.parent.relative_to(ROOT / "fastasr").parts) if p.parent != ROOT / "fastasr"
               else "fastasr" for p in (ROOT / "fastasr").rglob("__init__.py")}
    assert folders | {"fastasr.kernels"} == listed
