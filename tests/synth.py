"""Tiny seeded MovieLens-shaped folders for tests: a thin wrapper over ``job.data.synthetic``, the
one generator the tests, ``bench`` and ``bench-job`` share."""

from __future__ import annotations

from job.data.synthetic import write_movielens

__all__ = ["write_movielens"]
