"""Graceful stop on SIGINT/SIGTERM: the handler raises a flag; the loop finishes the step,
writes a checkpoint and exits. A second signal quits at once (KeyboardInterrupt) unless it
comes within ``repeat_window_s``: under torchrun one Ctrl-C reaches each worker twice.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Context manager installing the handlers (main thread only, where Python delivers
    signals); ``signal_name`` is set once a stop is requested."""

    def __init__(self, on_request: Callable[[str], None] | None = None,
                 repeat_window_s: float = 0.0) -> None:
        self.signal_name: str | None = None
        self.repeat_window_s = repeat_window_s  # a repeat this soon is the same request
        self._requested_at = 0.0
        self._on_request = on_request  # called once, e.g. to print how the run will stop
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, name: str) -> None:
        """Ask the loop to stop after the current step (also used by tests)."""
        if self.signal_name is None:
            self.signal_name = name
            self._requested_at = time.monotonic()
            if self._on_request is not None:
                self._on_request(name)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and time.monotonic() - self._requested_at > self.repeat_window_s:
            raise KeyboardInterrupt  # second signal: the user wants out now
        self.request(signal.Signals(signum).name)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker killed by the group's Ctrl-C would fail the
    main process ("DataLoader worker exited unexpectedly") before its checkpoint."""
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
