"""Small utilities every layer may use: parameter checks, eval mode, progress bars, clean stops."""
