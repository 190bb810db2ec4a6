"""Stop signals: a run asked to stop finishes its step, saves and ends (docs/fault-tolerance.md)."""

from __future__ import annotations

import signal
from typing import Any

from vitssl.engine.logging import log

# Signals that ask a run to stop: `timeout`, schedulers and container stops send SIGTERM, a
# terminal Ctrl-C sends SIGINT and a closed terminal SIGHUP, each often to the whole process
# group, data-loader workers included.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopRequest:
    """While entered, the first stop signal is remembered (the loop stops after its step);
    a second Ctrl-C aborts. A signal already set to be ignored (`nohup` ignores SIGHUP) stays
    ignored; outside the main thread signals are left alone."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            try:
                if signal.getsignal(sig) != signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        """First stop signal: finish the current step, save, stop. A second Ctrl-C aborts."""
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            log.warning("%s: stopping after this step (press Ctrl-C again to abort without saving)",
                        signal.Signals(signum).name)
        self.signum = signum
