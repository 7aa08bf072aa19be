import os

# CUDA kernels run under Numba's simulator wherever no GPU is present; this must be set before numba.cuda loads.
try:
    import torch

    _has_gpu = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_gpu = False
if not _has_gpu:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Node copies of remote durations tables (fastasr.data.durations.node_copy) go to a per-session scratch directory,
# never into the user's ~/.cache; a test that checks the cache sets its own.
if "FASTASR_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["FASTASR_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastasr-test-cache-")
