"""The RNN-Transducer: its settings, the torch front end (log-mel, SpecAugment), decoding, and reading model files."""
