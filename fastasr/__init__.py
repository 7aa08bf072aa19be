"""fastasr: fast, dependable RNN-Transducer training for Russian speech on large Opus corpora."""

__version__ = "0.1.0"
