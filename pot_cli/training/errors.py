"""Error types of the useful-work library (all :class:`PotError` subclasses, so the CLI prints one
line and exits non-zero instead of a traceback)."""

from __future__ import annotations

from pot_cli.errors import ConfigError, PotError


class TrainingError(PotError):
    """A useful-work operation cannot be carried out (bad arguments, inconsistent inputs)."""


class TaskConfigError(ConfigError):
    """A task definition (TOML under ``configs/tasks/``) is unknown, missing, malformed or invalid.

    The message always names the file and, where one is at fault, the key.
    """


class DatasetError(TrainingError):
    """A task's data set cannot be built (e.g. the Python standard library source is missing)."""


class CodecError(PotError):
    """A gradient payload is malformed: the wire codec refuses it. ``reason`` is a short code.

    ``internal`` marks the codec's last line of defence: an unexpected exception inside the
    decoder, turned into a refusal instead of a crash. Every refusal the codec means to make
    has its own check, so tests (fuzzing) treat an internal one as a bug to fix."""

    def __init__(self, reason: str, detail: str, *, internal: bool = False) -> None:
        super().__init__(f"gradient payload rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.internal = internal
