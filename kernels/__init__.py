"""Custom Numba CPU and CUDA kernels, installed as ``fastasr.kernels``.

Kept light: submodules (``rnnt_cpu``, ``rnnt_cuda``, ``audio``) are imported only when used, so importing one of
them never compiles or loads the others. The audio kernels are re-exported lazily (PEP 562)::

    from fastasr.kernels import peak_normalize, preemphasis, normalize_preemphasize_ragged
"""

_AUDIO = (
    "peak_normalize",
    "preemphasis",
    "normalize_preemphasize",
    "peak_normalize_ragged",
    "preemphasis_ragged",
    "normalize_preemphasize_ragged",
)

__all__ = list(_AUDIO)


def __getattr__(name):
    if name in _AUDIO:
        from . import audio

        return getattr(audio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_AUDIO))
