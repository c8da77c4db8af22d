"""User-facing errors: one line, a non-zero exit code, never a traceback."""


class Z1Error(Exception):
    """An error the user can act on. `str(err)` is the whole message."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ModelNotAvailable(Z1Error):
    """The requested model is neither in the store nor reachable."""
