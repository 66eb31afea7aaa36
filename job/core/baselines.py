"""The names of the baselines the model is judged against (``job.stages.evaluate`` fits them).

They name rows of run.json's metrics, of the DuckDB ``metrics`` table and of the site's
tables and chart; the site reads them from here because it must not import
``job.stages.evaluate`` (which loads Keras). Three predict ratings (the article's two and the bias
model), two only rank.
"""

from __future__ import annotations

POPULARITY = "popularity"
EASE = "EASE"
BASELINE_NAMES = ("global mean", "movie mean", "user+movie bias", POPULARITY, EASE)
