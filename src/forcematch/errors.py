"""The one exception type users see: a message that names the file, key, frame or step."""


class ForcematchError(Exception):
    """Bad input or a failed physical check; the CLI prints the message and exits with code 2."""
