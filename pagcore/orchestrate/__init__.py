"""Which runs the book needs and how they get made: the paper's tables as rows of runs, sweeps."""
