"""A run folder's manifest (the typed run.json, read once and written once per stage) and each
stage's input checks."""
