"""The user-error type every command turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, paths, data, results folder): exit code 2, one line."""
