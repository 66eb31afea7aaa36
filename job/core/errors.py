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


class PublishRefused(PublishError):
    """A run older than the one the site names, with no room left for it by --keep-runs."""


class WriteError(JobError, OSError):
    """A write the file system refused: full, read-only, not permitted.

    A ``JobError`` (its one line names the folder and the fix) that is still the ``OSError``
    it was, with its ``errno`` and ``strerror``, for callers that handle those themselves.
    """

    def __init__(self, message: str, number: int, strerror: str, filename: str | None = None):
        OSError.__init__(self, number, strerror, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message
