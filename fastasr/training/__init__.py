"""A training run: its configuration, the loop and the step, ranks, logs, checkpoints, warm starts and the
tokenizer it trains with."""
