"""The one progress channel: stderr, a rich console shared by log lines, training bars and heartbeats.

Bars and log lines must go through one ``Console`` (rich redraws a live bar around what that console prints; a
second console on the same stream leaves a stale copy of the bar per line). Without a terminal (CI logs) there
are no bars: every line is prefixed with the elapsed time and long steps print a one-line heartbeat.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

WIDE = 200  # columns without a terminal: rich would fall back to 80 and cut runtime names
HEARTBEAT_SECONDS = 20.0

_console: Any = None
_started = time.monotonic()


def interactive() -> bool:
    """True when stderr is a terminal (bars, colours); False in CI logs and pipes."""
    return sys.stderr.isatty()


class _UserStderr:
    """``sys.stderr`` as the user sees it, also while ``captured_output`` sends fd 2 to a converter's log."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        from edgeship.core.io import USER_STDERR

        if not USER_STDERR:
            return sys.stderr.write(text)
        with contextlib.suppress(OSError):  # the capture may end (and close the fd) while a heartbeat writes
            os.write(USER_STDERR[0], text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return interactive()

    def fileno(self) -> int:
        return sys.stderr.fileno()


def progress_console() -> Any:
    """The shared stderr console (created on first use)."""
    global _console  # one per process, like the stream it writes to
    if _console is None:
        from rich.console import Console

        _console = Console(file=_UserStderr(), highlight=False, width=None if interactive() else WIDE)
    return _console


def elapsed() -> str:
    """Seconds since the process started, as a log prefix (``[  12.3s]``)."""
    return f"[{time.monotonic() - _started:7.1f}s]"


@contextlib.contextmanager
def heartbeat(log: Callable[[str], None], what: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """While the block runs, ``log`` says ``what: still running (N s)`` every ``every`` seconds.

    A converter or a runtime can be silent for a minute (a ViT's TFLite export: 48 s); a log that says nothing
    that long looks hung. The thread only prints; it never touches the work.
    """
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            log(f"{what}: still running ({time.monotonic() - start:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
