"""Capped output buffers: what an agent's or a command's streams keep, however much they print.

:class:`HeadTail` keeps the first and the last ``cap // 2`` bytes and counts what fell out
between (command agents' and ``run_command``'s output: the start says what ran, the end how it
ended). :class:`Tail` keeps the last ``limit`` bytes (ACP terminals: the spec truncates from the
beginning).
"""

from __future__ import annotations


class HeadTail:
    """The head and the tail of a stream, so huge output costs little memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0  # bytes left out between head and tail

    def add(self, chunk: bytes) -> None:
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.cap // 2:
            cut = len(self.tail) - self.cap // 2
            self.dropped += cut
            del self.tail[:cut]

    def text(self, note: str = "left out") -> str:
        """Head and tail decoded, a line ``[... N bytes <note> ...]`` between when bytes fell
        out."""
        mid = f"\n[... {self.dropped} bytes {note} ...]\n" if self.dropped else ""
        return (
            bytes(self.head).decode("utf-8", "replace")
            + mid
            + bytes(self.tail).decode("utf-8", "replace")
        )


class Tail:
    """The last ``limit`` bytes of a stream; ``truncated`` once anything fell out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]
            self.truncated = True

    def text(self) -> str:
        """The bytes kept, decoded; a character cut at the start is left out."""
        text = bytes(self.buf).decode("utf-8", "replace")
        return text.lstrip("\ufffd") if self.truncated else text
