"""The stages: train (with the Keras fit, evaluation and what is served), score, merge, and the
article's `recommend` example; each runs alone on a run folder."""
