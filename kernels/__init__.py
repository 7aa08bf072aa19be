"""Custom Numba CPU and CUDA kernels, installed as ``fastasr.kernels``."""
