"""The names the command line offers for synthetic data, apart from the generator
(``job.data.synthetic``) so that parsing flags imports neither numpy nor pandas."""

# (users, movies, ratings) of GroupLens' releases, as their README files state them.
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-latest-small": (610, 9_742, 100_836),
    "ml-1m": (6_040, 3_883, 1_000_209),
    "ml-10m": (69_878, 10_681, 10_000_054),
    "ml-25m": (162_541, 62_423, 25_000_095),
    "ml-32m": (200_948, 87_585, 32_000_204),
}
# What a rating is made of: "genre" (taste x genre, movie quality, user bias) or "latent"
# (a dot product of user and movie factors, no bias at all). "independent" is "latent" with
# every movie drawn by popularity alone: which movies a user rates says nothing about how they
# rate them, so a ranker must ask the rating model "would they like it".
SIGNALS = ("genre", "latent", "independent")
