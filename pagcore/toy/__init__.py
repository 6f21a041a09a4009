"""Section 5.1: the 2-D toy experiment, every seed trained as one batched model."""
