"""One module per CLI command: `configure(parser)` and `run(args) -> int`.

Imported before any command module, and so before torch: the one place where the process's OpenMP settings can
still be chosen. Torch's OpenMP threads spin between operations by default, and on a small CPU machine that
spinning takes the cores that Numba's kernels (the RNN-T loss) and the loader's workers need: CPU training steps ran
4-7x slower under load (benchmarks/RESULTS.md, "Training"). Passive waiting costs a wake-up per parallel region
instead. A value the user set is kept.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
