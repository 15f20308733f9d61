"""Split streaming text into sentences, so speech can start before the answer is complete."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … or a newline, followed by whitespace; "e.g. " and numbers like
# "3.5" do not end one.
_END = re.compile(r"(?<!\b[A-Za-z]\.)(?<!\be\.g)(?<!\bi\.e)([.!?…]+[\"')\]]*|\n)\s+")
# Long clauses are spoken at a comma once they pass this length, to keep first audio early.
_CLAUSE_CHARS = 120


class SentenceSplitter:
    def __init__(self) -> None:
        self._buffer = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the sentences it completed."""
        self._buffer += text
        out: list[str] = []
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
        return rest
