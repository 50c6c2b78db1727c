"""One exception type for user-facing errors: the CLI prints it as one line instead of a traceback."""


class AsitError(Exception):
    """Bad input (argument, file, checkpoint) explained in a message that names the culprit."""
