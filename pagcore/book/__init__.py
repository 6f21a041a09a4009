"""Presentation: tables, verdicts, figures, the reproduction status and the lambda explorers of the book."""
