"""Scanning helpers of the identifier detector's fast scan (client/bundle/identifiers.py):
where a run of characters ends, and the first octet of an IPv4 address."""

from __future__ import annotations

_DIGIT_CHARS = "0123456789"
_FIRST_OCTETS = frozenset(str(n) for n in range(256))
_NOT_BEFORE_IPV4 = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")


def first_octet_length(head: str) -> int:
    """Length of the first octet of an IPv4 address whose first dot follows head, or 0.

    head: up to 4 characters before the dot (fewer at the start of the text).
    The octet is all the digits there, 0-255 without a leading zero, and the
    character before it may not be a word character or a dot.
    """
    length = len(head) - len(head.rstrip(_DIGIT_CHARS))
    if head[len(head) - length :] not in _FIRST_OCTETS:
        return 0
    if length < len(head) and head[-length - 1] in _NOT_BEFORE_IPV4:
        return 0
    return length


class RunStart:
    """Where the run of some characters that ends at a position starts, for rising positions.

    The last ``window`` characters are stripped in C; a longer run is walked
    back one character at a time, but never past the previous position asked
    about (its answer is reused), so a scan stays linear in the text.
    """

    __slots__ = ("chars", "last_end", "last_start", "members", "window")

    def __init__(self, chars: str, window: int) -> None:
        self.chars = chars
        self.members = frozenset(chars)
        self.window = window
        self.last_end = self.last_start = -1

    def before(self, low: str, end: int) -> int:
        """The start of the run of chars that ends at end (end itself when there is none)."""
        floor = end - self.window
        if floor <= 0:
            start = len(low[:end].rstrip(self.chars))
        elif kept := low[floor:end].rstrip(self.chars):
            start = floor + len(kept)
        elif self.last_end >= floor:
            start = self.last_start  # the same run as last time
        else:
            start = floor
            while start and low[start - 1] in self.members:
                start -= 1
                if start == self.last_end:
                    start = self.last_start
                    break
        self.last_end, self.last_start = end, start
        return start
