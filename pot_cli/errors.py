"""The error types every part of pot raises for expected failures.

The CLI turns a :class:`PotError` into one clear line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PotError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code: int = 1


class UsageError(PotError):
    """Wrong command-line usage."""

    exit_code = 2


class ConfigError(PotError):
    """A configuration file is missing, malformed or invalid (names file and key)."""

    exit_code = 2


class KeyFileError(PotError):
    """A node identity (key file) is missing, corrupt or unsafely stored."""

    exit_code = 1


class EncodingError(PotError):
    """A value cannot be encoded canonically (e.g. NaN, a non-string key)."""

    exit_code = 1
