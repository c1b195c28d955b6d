"""Exceptions of headend.

::

    HeadendError
     +-- ConfigError (ValueError)          bad configuration or CLI arguments
     +-- DecodeError (ValueError)          a frame or CSV that cannot be decoded at all
     |    +-- FrameError                   garbled / truncated / bad HMAC frame
     +-- ValidationError (ValueError)      a record that breaks a structural rule
     +-- StorageError                      the store failed; nothing was acknowledged
     +-- PublishError                      a bus or delivery adapter failed
     +-- ServiceUnavailable (ConnectionError)  a broker or database is unreachable

Errors carry context (``reason``, ``source``, ``collector_id``) where they have it.
No driver exception escapes an adapter: adapters re-raise as one of these ``from exc``.
"""

from __future__ import annotations


class HeadendError(Exception):
    """Root of every error headend raises on purpose."""


class ConfigError(HeadendError, ValueError):
    """Invalid configuration or arguments."""


class DecodeError(HeadendError, ValueError):
    """Input that cannot be decoded. ``reason`` is a key of :data:`model.reasons.REASONS`."""

    def __init__(self, message: str, *, reason: str, source: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source


class FrameError(DecodeError):
    """A binary collector frame that is garbled, truncated or not authentic."""

    def __init__(
        self, message: str, *, reason: str, source: str = "", collector_id: int | None = None
    ) -> None:
        super().__init__(message, reason=reason, source=source)
        self.collector_id = collector_id


class ValidationError(HeadendError, ValueError):
    """A record that breaks a structural rule."""


class StorageError(HeadendError):
    """The store could not make data durable; nothing was acknowledged."""


class PublishError(HeadendError):
    """A bus or delivery adapter could not publish."""


class ServiceUnavailable(HeadendError, ConnectionError):
    """A broker or database is unreachable."""
