"""Telling what a binary file is from its first bytes, for messages that name the real problem.

``numpy.load`` with ``allow_pickle=False`` reports any file that is not an ``.npz``/``.npy``
as "contains pickled (object) data": it falls back to pickle for an unknown start. That
misleads a user holding a truncated download or random bytes, so readers check the magic
bytes first and say what the file starts with instead.
"""

from __future__ import annotations

__all__ = ["NPY_MAGIC", "ZIP_MAGIC", "describe_start", "is_zip_start"]

# A zip archive (an npz) starts with a local file header, or an end-of-central-directory
# record when it is empty; a lone .npy starts with the NumPy magic string.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"


def is_zip_start(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts a zip archive such as an ``.npz``."""
    return head.startswith(ZIP_MAGIC)


def describe_start(head: bytes) -> str:
    """What a file starting with ``head`` looks like, as a clause for an error message."""
    if not head:
        return "the file is empty"
    if head.startswith(NPY_MAGIC):
        return "it is a single .npy array, not an .npz archive"
    text = head[:24].decode("ascii", errors="replace")
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"it starts with the text {text.splitlines()[0]!r}"
    return f"it starts with the bytes {head[:8]!r}"
