"""Split streaming text into pieces to speak, so speech can start before the answer is
complete.

The first piece of a response is short, a clause or a few words: text to speech cannot start
before its piece is complete, so the first piece's length is the reply's first-audio delay
(with a neural voice, ~100 ms per second of speech on one core). Later pieces are whole
sentences, which a voice phrases better, and they are made while the earlier ones play.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? … or a newline, followed by whitespace; "e.g. " and numbers like
# "3.5" do not end one.
_END = re.compile(r"(?<!\b[A-Za-z]\.)(?<!\be\.g)(?<!\bi\.e)([.!?…]+[\"')\]]*|\n)\s+")
# A clause ends at , ; : or a dash, followed by whitespace.
_CLAUSE = re.compile(r"(?:[,;:]|\s[–—-])\s+")
# Long clauses are spoken at a comma once they pass this length, to keep first audio early.
_CLAUSE_CHARS = 120
# The first piece: ends at the first clause or sentence end after at least this many words,
# or after at most this many words when no punctuation comes.
_FIRST_MIN_WORDS = 2
_FIRST_MAX_WORDS = 6


class SentenceSplitter:
    def __init__(self) -> None:
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces it completed."""
        self._buffer += text
        out: list[str] = []
        if self._first:
            head = self._first_piece()
            if head is None:
                return []
            out.append(head)
        while True:
            match = _END.search(self._buffer)
            if match is None:
                break
            out.append(self._buffer[: match.end()].strip())
            self._buffer = self._buffer[match.end() :]
        if len(self._buffer) > _CLAUSE_CHARS and ", " in self._buffer:
            head, _, tail = self._buffer.rpartition(", ")
            out.append(head.strip() + ",")
            self._buffer = tail
        return [s for s in out if s]

    def flush(self) -> str:
        rest, self._buffer = self._buffer.strip(), ""
        self._first = False
        return rest

    def _first_piece(self) -> str | None:
        """Cut the first piece off the buffer once it is complete; None while it is not."""
        ends = [m.end() for m in (*_END.finditer(self._buffer), *_CLAUSE.finditer(self._buffer))]
        for end in sorted(ends):
            if len(self._buffer[:end].split()) >= _FIRST_MIN_WORDS:
                return self._cut(end)
        # Words are complete once whitespace follows them.
        words = list(re.finditer(r"\S+\s+", self._buffer))
        if len(words) >= _FIRST_MAX_WORDS:
            return self._cut(words[_FIRST_MAX_WORDS - 1].end())
        return None

    def _cut(self, end: int) -> str:
        head, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
        self._first = False
        return head
