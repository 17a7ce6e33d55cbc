"""Research code beside its results: how the zoos were built and studied (run as ``python -m studies.<study>.<module>``)."""
