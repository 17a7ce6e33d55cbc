"""What a transfer step and epoch cost next to plain fine-tuning (``python -m studies.benchmark.run``)."""
