"""Mistakes a user can fix. train.py and evaluate.py print them as one line, not a traceback."""


class UserError(Exception):
    """A problem with the command, config, data or environment; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (a ValueError, as callers of the Python API expect)."""


class InputError(UserError, ValueError):
    """A file or setting named by the user that cannot be read as asked (a ValueError, as callers
    of the Python API expect); the message names the file, row or setting."""
