"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class SlimexpError(Exception):
    """Bad input or environment the user can fix; never a bug in slimexp."""
