"""The feature library's own error type: a problem with the tables it was given (not a bug).

The library imports nothing from ``pipeline``; the ``crs`` CLI prints a ``FeatureError`` as the same
one-line error as its own input errors.
"""


class FeatureError(ValueError):
    """Bad input tables or settings (a missing column, a duplicate patient id)."""
