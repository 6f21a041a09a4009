"""Training one real-data run: the step, the resumable trainer, device and strategy choice."""
