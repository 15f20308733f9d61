"""The started server's resource use, read from /proc: which process it is, its CPU seconds
and its memory, with its descendants (worker processes)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def server_pid() -> int | None:
    """The ``voxgate serve`` child of this process (``voxgate_server`` does not say)."""
    for pid, (ppid, _) in processes().items():
        if ppid == os.getpid() and b"voxgate" in read(f"/proc/{pid}/cmdline"):
            return pid
    return None


def read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process ended between listing and reading
        return b""


def read_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:  # the process ended
        return []


def processes() -> dict[int, tuple[int, float]]:
    """Every process's parent pid and CPU seconds (user + system) so far."""
    found = {}
    for entry in read_dir("/proc"):
        if entry.isdigit() and (stat := read(f"/proc/{entry}/stat")):
            # The command name, in parentheses, may hold spaces: split after it.
            fields = stat[stat.rindex(b")") + 2 :].split()
            found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` alone, and of it with all its live descendants."""
    table = processes()
    own = table.get(pid, (0, 0.0))[1]
    tree, frontier = own, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, cpu) in table.items():
            if ppid == parent:
                tree += cpu
                frontier.append(child)
    return own, tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    table = processes()
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in table.items() if ppid == parent]
        tree += children
        frontier += children
    return tree


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its live descendants, in MiB."""
    pages = 0
    for process in process_tree(pid):
        fields = read(f"/proc/{process}/statm").split()
        pages += int(fields[1]) if len(fields) > 1 else 0
    return pages * PAGE / 2**20
