"""The errors selfsup raises for bad input, in one place: each message names the key, file or step
at fault, and the command line turns them into one line and exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the key (and file) at fault."""


class DataError(ValueError):
    """Unusable input data; the message names the file or folder at fault."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""
