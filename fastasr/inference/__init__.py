"""Using a trained model: `fastasr eval`, `fastasr transcribe --checkpoint`, and `fastasr export`."""
