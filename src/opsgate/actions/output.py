"""Bounded capture of an output stream: its head and tail kept, its full size counted.

A command may print gigabytes; a step's outputs go into events and into an assistant's context.
The capture keeps the first and the last half of ``limit`` bytes and reports how much was
dropped between them, so the start (the command's banner, the first error) and the end (its
summary, the last error) both survive.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes of each stream kept by default: 32 KiB of head and 32 KiB of tail.
DEFAULT_OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class CapturedOutput:
    """What was kept of a stream."""

    #: The kept text (head, a marker of what was dropped, tail), decoded as UTF-8.
    text: str
    #: How many bytes the stream had in all.
    size: int
    #: Whether bytes were dropped.
    truncated: bool


class OutputCapture:
    """Collects the chunks of one stream within ``limit`` bytes."""

    def __init__(self, limit: int = DEFAULT_OUTPUT_LIMIT) -> None:
        self._head_limit = limit - limit // 2
        self._tail_limit = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.size = 0

    def feed(self, chunk: bytes | str) -> None:
        """Add the next chunk of the stream."""
        data = chunk.encode() if isinstance(chunk, str) else chunk
        self.size += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self._tail_limit:
            self._tail += data
            del self._tail[: max(len(self._tail) - self._tail_limit, 0)]

    def result(self) -> CapturedOutput:
        """The kept text; a marker says how many bytes were dropped in the middle."""
        dropped = self.size - len(self._head) - len(self._tail)
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        if dropped <= 0:
            return CapturedOutput(head + tail, self.size, False)
        marker = f"\n[... {dropped} bytes omitted of {self.size} ...]\n"
        return CapturedOutput(head + marker + tail, self.size, True)
