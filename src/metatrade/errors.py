"""The exceptions a user can cause: bad configuration, bad data, bad checkpoints.

Everything under ``UserError`` is something the person running a command can fix (its
message names the file, key or task and the fix); the command line turns these into one
``error: ...`` line and exit code 2. Any other exception (a plain ``ValueError``,
``KeyError``, ``RuntimeError`` ...) is a bug in metatrade and keeps its traceback.

``UserError`` subclasses ``ValueError`` so code written against the older exceptions
(``ConfigError`` and ``DataValidationError`` were ``ValueError`` subclasses) still catches them.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (config, data, checkpoint, command-line arguments)."""


class ConfigError(UserError):
    """A configuration file or override that cannot be used; the message names key and fix."""


class DataError(UserError):
    """Data files or task names that cannot be used; the message names file/task and fix."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupted, truncated, or does not fit what loads it."""


class DataWarning(UserWarning):
    """Data that can be used but looks suspicious (a gap of many sessions, a skipped file)."""
