"""Split streaming text into pieces to speak, so speech can start before the answer is
complete.

The first piece of a response is short, a clause or a few words: text to speech cannot start
before its piece is complete, so the first piece's length is the reply's first-audio delay
(with a neural voice, ~100 ms per second of speech on one core). Later pieces are whole
sentences, which a voice phrases better, and they are made while the earlier ones play.

Linear time whatever the text: no piece is longer than `MAX_PIECE_CHARS` (text with no
sentence end is cut at a clause or word boundary, a longer word where it stands), the buffer
holds less than that between pushes, and every search runs over a window of that size.
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
# The longest piece handed to speech synthesis: it bounds how long one piece holds a shared
# synthesis thread (and so how long it can delay another session's first audio).
MAX_PIECE_CHARS = 400


class SentenceSplitter:
    def __init__(self) -> None:
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces it completed."""
        buf = self._buffer + text
        out: list[str] = []
        pos = 0
        if self._first:
            end = _first_end(buf[:MAX_PIECE_CHARS])
            if end is None and len(buf) <= MAX_PIECE_CHARS:
                self._buffer = buf
                return []
            end = end if end is not None else _cut(buf, 0, MAX_PIECE_CHARS)
            out.append(buf[:end].strip())
            pos = end
            self._first = False
        while True:
            match = _END.search(buf, pos, pos + MAX_PIECE_CHARS)
            if match is not None:
                out.append(buf[pos : match.end()].strip())
                pos = match.end()
            elif len(buf) - pos > MAX_PIECE_CHARS:
                cut = _cut(buf, pos, pos + MAX_PIECE_CHARS)
                out.append(buf[pos:cut].strip())
                pos = cut
            else:
                break
        rest = buf[pos:]
        if len(rest) > _CLAUSE_CHARS and ", " in rest:
            head, _, rest = rest.rpartition(", ")
            out.append(head.strip() + ",")
        self._buffer = rest
        return [s for s in out if s]

    def flush(self) -> str:
        rest, self._buffer = self._buffer.strip(), ""
        self._first = False
        return rest


def _first_end(text: str) -> int | None:
    """Where the first piece of ``text`` ends once it is complete; None while it is not."""
    ends = [m.end() for m in (*_END.finditer(text), *_CLAUSE.finditer(text))]
    for end in sorted(ends):
        if len(text[:end].split()) >= _FIRST_MIN_WORDS:
            return end
    # Words are complete once whitespace follows them.
    words = list(re.finditer(r"\S+\s+", text))
    if len(words) >= _FIRST_MAX_WORDS:
        return words[_FIRST_MAX_WORDS - 1].end()
    return None


def _cut(buf: str, start: int, end: int) -> int:
    """Where to cut a piece of ``buf[start:end]`` that has no sentence end: after its last
    clause break, else its last space, else (one long word) at ``end``."""
    for sep in (", ", "; ", " "):
        at = buf.rfind(sep, start, end)
        if at > start:
            return at + len(sep)
    return end
