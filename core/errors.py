"""Exceptions of the service. Each docstring is its default message."""

from __future__ import annotations

from dataclasses import dataclass


class AppError(Exception):
    """Something went wrong in AIWebImageService."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigError(AppError):
    """The configuration is invalid."""


class InvalidInput(AppError):
    """The request is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotFound(AppError):
    """No such object."""


class Conflict(AppError):
    """The object is not in a state that allows this."""


class DatabaseUnavailable(AppError):
    """The database cannot be reached right now."""


class StorageError(AppError):
    """The image store failed."""


@dataclass(frozen=True)
class TaskFailure(Exception):
    """A model, storage or delivery failure, classified once.

    ``retryable`` failures go back to the queue (unless attempts are exhausted);
    permanent ones mark the task failed with ``code`` and ``message``.
    """

    retryable: bool
    code: str
    message: str
    retry_after_s: float | None = None
    # 429 means "slow down" to the queue; 503 means "down, try later"; other 5xx backoff.
    rate_limited: bool = False
    upstream_unavailable: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
