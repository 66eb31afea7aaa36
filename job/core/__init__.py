"""The bottom layer: errors, signals, atomic files, the run folder's layout, the config, progress,
memory, timing, and the names of the baselines and the output tables. Imports nothing above."""
