"""User-facing error type.

Every problem caused by input (a missing file, a click outside the image, a mask of the wrong shape, a corrupt
checkpoint) is raised as :class:`FinecutError` with a message that names the offending thing. The CLI prints the
message on one line instead of a traceback.
"""

from __future__ import annotations


class FinecutError(ValueError):
    """An error caused by the user's input; its message is meant to be shown as is."""
