"""job.data.shapes: the sizes the command line offers are real MovieLens-like shapes."""

from __future__ import annotations

import pytest

from job.cli import build_parser
from job.data.shapes import SHAPES, SIGNALS
from job.data.synthetic import resolve_shape


@pytest.mark.parametrize("name", SHAPES)
def test_each_shape_is_a_sparse_rating_matrix_the_generator_makes(name: str) -> None:
    users, movies, ratings = SHAPES[name]
    assert users * 20 <= ratings < users * movies  # at least 20 ratings a user, never all pairs
    size = resolve_shape(name, None, None, None)
    assert (size.name, size.users, size.movies) == (name, users, movies)


def test_bench_job_offers_every_shape_and_signal() -> None:
    args = build_parser().parse_args(["bench-job", "--shape", "ml-32m", "--signal", SIGNALS[-1]])
    assert (args.shape, args.signal) == ("ml-32m", SIGNALS[-1])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench-job", "--shape", "ml-2m"])
