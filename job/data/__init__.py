"""MovieLens in: loading and validating the files, downloads, id encoding and side features,
splits, the interaction matrices, and the synthetic generator that stands in for them."""
