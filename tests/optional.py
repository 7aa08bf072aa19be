"""Reference libraries some tests need and a GPU machine may lack (it has no librosa): imported on first use, so a
test that needs one skips without it while the rest of its module, the GPU tests among them, still runs."""

import pytest


class _Lazy:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("_"):  # pytest's collection probes module globals for dunder and private markers
            raise AttributeError(attr)
        return getattr(pytest.importorskip(self._name), attr)


librosa = _Lazy("librosa")
