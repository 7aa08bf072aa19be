"""A corpus as rows: the readers of directories, Open STT CSV, NeMo, Lhotse and Kaldi manifests; segments; the
checks that accept or reject each row; split assignment and grouping."""
