"""MovieLens rating model as a batch job: train, score, store, render, publish."""

__version__ = "0.1.0"
