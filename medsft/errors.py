"""Mistakes a user can fix. train.py and evaluate.py print them as one line, not a traceback."""


class UserError(Exception):
    """A problem with the command, config, data or environment; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (a ValueError, as callers of the Python API expect)."""
