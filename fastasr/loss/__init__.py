"""RNN-T losses: the exact loss on materialised logits and the fused, memory-lean joint + loss.

Three layers: autograd Functions (``rnnt.py``, ``fused.py``) -> dispatch (``dispatch.py``: checks shapes, dtypes,
devices and lengths once, allocates workspace, picks the CPU or CUDA kernel) -> pure kernels
(``fastasr.kernels.rnnt_cpu``, ``fastasr.kernels.rnnt_cuda``). ``reference.py`` is a slow pure-PyTorch lattice used
by tests and benchmarks as the independent baseline.
"""
from fastasr.loss.fused import fused_rnnt_loss
from fastasr.loss.rnnt import rnnt_loss

__all__ = ["rnnt_loss", "fused_rnnt_loss"]
