"""The run store: one directory per run, named by what was trained, and its provenance records."""
