import os

# CUDA kernels run under Numba's simulator wherever no GPU is present; this must be set before numba.cuda loads.
try:
    import torch

    _has_gpu = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_gpu = False
if not _has_gpu:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
