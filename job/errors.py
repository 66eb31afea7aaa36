"""Domain errors: each carries one line a user can act on.

The CLI turns any ``JobError`` into that line on stderr and a non-zero exit, never a
traceback. Raise them with the file, row or column involved and the fix.
"""


class JobError(Exception):
    """A user-facing error: bad input, bad configuration, unreachable storage."""


class DataError(JobError):
    """A dataset file is missing, malformed or inconsistent."""


class ConfigError(JobError):
    """A flag or configuration value is invalid."""


class PublishError(JobError):
    """Publishing to a bucket or folder failed."""
