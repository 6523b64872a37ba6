"""Stop strings in streamed text: what may be shown now, and where the text ends.

A generation stops when a stop string appears in its text (the chat template's end-of-turn
marker, when a model spells it out as plain text). Until then, text that could be the start of a
stop string is held back, so a customer never sees half a marker. Pure string logic; the token
loop that feeds it is the llama.cpp backend's.
"""

from __future__ import annotations


class StopStringFilter:
    """Holds back streamed text that may be the start of a stop string, and cuts at one.

    `push(text_so_far)` returns the new text that is safe to show; `stopped` turns true once a
    stop string appeared, and `flush()` returns what was held back when generation ends another
    way.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._emitted = 0
        self._text = ""
        self.stopped = False

    def push(self, text: str) -> str:
        self._text = text
        cut = min((text.find(s) for s in self._stops if s in text), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(cut)
        return self._take(len(text) - self._held_back(text))

    def flush(self) -> str:
        return "" if self.stopped else self._take(len(self._text))

    @property
    def text(self) -> str:
        """All the text shown so far."""
        return self._text[: self._emitted]

    def _held_back(self, text: str) -> int:
        # The longest tail of `text` that is a proper prefix of a stop string.
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _take(self, end: int) -> str:
        piece = self._text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece
