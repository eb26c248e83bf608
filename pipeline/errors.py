"""User-facing errors: one line naming the file, column, key or row; no traceback."""


class UserError(Exception):
    """A problem with the user's input or configuration (not a bug in the pipeline).

    The CLI prints ``str(error)`` as a single line and exits non-zero.
    """
