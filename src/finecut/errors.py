"""User-facing error type.

Every problem caused by input (a missing file, a click outside the image, a mask of the wrong shape, a corrupt
checkpoint) is raised as :class:`FinecutError` with a message that names the offending thing. The CLI prints the
message on one line instead of a traceback.
"""

from __future__ import annotations


class FinecutError(ValueError):
    """An error caused by the user's input; its message is meant to be shown as is."""


def one_line(message: str) -> str:
    """``message`` with control characters (a newline in a file name, ...) escaped, so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


class TooLarge(FinecutError):
    """Input over a configured size limit: an image's pixel count, a file's or a request body's bytes."""


class NotAnImage(FinecutError):
    """Data that is not a decodable image of a supported type."""
