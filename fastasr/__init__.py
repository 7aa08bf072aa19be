"""fastasr: fast, dependable RNN-Transducer training for Russian speech on large Opus corpora."""

__version__ = "0.1.0"


def _source_checkout_kernels() -> None:
    # Installed, kernels/ lands inside the package as fastasr.kernels. Run straight from a checkout
    # (PYTHONPATH=the repository, nothing installed, as on a machine with no package index) it sits beside the
    # package: let the package's search path reach it under the same name.
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "kernels")) and os.path.isfile(os.path.join(root, "kernels", "__init__.py")):
        __path__.append(root)


_source_checkout_kernels()
