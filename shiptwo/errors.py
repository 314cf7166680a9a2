"""The project's one exception type: every message names the file, field or id at fault."""


class ShiptwoError(Exception):
    """A user-facing error; the CLI prints it as one line and exits non-zero."""

    exit_code = 2
