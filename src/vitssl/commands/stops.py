"""A long command stopped by a signal is reported as a stop, not as an error.

Ctrl-C raises KeyboardInterrupt; while a command runs (`signals_stop_the_command`), SIGTERM
(`timeout`, schedulers, container stops) and SIGHUP (a closed terminal) raise `CommandStopped`,
a KeyboardInterrupt, so that the same `except KeyboardInterrupt` keeps what a command can keep
(embed's chunks, transfer's finished sets) for every stop signal. `vitssl pretrain` handles these
signals itself while it trains (it finishes the step and saves: `engine/stop_signals.py`).
Torch-free: `vitssl.cli` imports it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RAISING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class CommandStopped(KeyboardInterrupt):
    """A stop signal ended the command; `kept` says what of its work remains (may be empty)."""

    def __init__(self, signum: int = signal.SIGINT, kept: str = "") -> None:
        super().__init__(kept)
        self.signum, self.kept = signum, kept


def _raise(signum: int, _frame: Any) -> None:
    raise CommandStopped(signum)


@contextmanager
def signals_stop_the_command() -> Iterator[None]:
    """While entered, SIGTERM and SIGHUP raise `CommandStopped` in the main thread (a signal set
    to be ignored, as `nohup` sets SIGHUP, stays ignored); the previous handlers come back after."""
    previous = {}
    for sig in RAISING_SIGNALS:
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                previous[sig] = signal.signal(sig, _raise)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        with stops_unwrapped():
            yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The stop (Ctrl-C, `CommandStopped`) that `error` was raised while handling, if any.

    A signal's exception can land inside a library that then fails on its half-built state
    and raises its own error from the handling (OmegaConf does: a Ctrl-C inside
    `OmegaConf.create` surfaced as a `ConfigKeyError`); the stop is still in the chain of
    `__context__`s, even where the library raised `from None`.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def stops_unwrapped() -> Iterator[None]:
    """Re-raise as the stop itself an error that a stop signal caused inside a library, so
    that `except KeyboardInterrupt` keeps what it keeps whatever code the signal interrupted."""
    try:
        yield
    except Exception as error:
        stop = stop_behind(error)
        if stop is None:
            raise
        raise stop from error


@contextmanager
def stop_keeps(kept: str) -> Iterator[None]:
    """Any stop signal (also one a library turned into its own error) ends the command as a
    `CommandStopped` saying what of its work is `kept` (embed's chunks, transfer's sets)."""
    try:
        with stops_unwrapped():
            yield
    except KeyboardInterrupt as stop:
        raise CommandStopped(getattr(stop, "signum", signal.SIGINT), kept) from None


def stopped_line(stop: KeyboardInterrupt, args: Any, seconds_text: str) -> str:
    """`vitssl: stopped by SIGTERM after 4 s, before `vitssl eval knn` finished; ...` (one line)."""
    signum = getattr(stop, "signum", signal.SIGINT)
    kept = getattr(stop, "kept", "") or _default_kept(args)
    return (f"vitssl: stopped by {signal.Signals(signum).name} after {seconds_text}, before `vitssl {command_of(args)}` "
            f"finished; {kept}")


def _default_kept(args: Any) -> str:
    if args.command == "pretrain":  # stopped outside its training loop, or by a second Ctrl-C
        return f"continue from its last checkpoint, if one was written: vitssl pretrain --resume {args.resume or args.out}"
    return "nothing of it is complete: run the same command again"


def command_of(args: Any) -> str:
    """`eval knn`, `analyze layers`, `report`: the command line's command and sub-command."""
    sub = next((getattr(args, d) for d in ("protocol", "analysis", "benchmark", "data_command")
                if isinstance(getattr(args, d, None), str)), None)
    return f"{args.command} {sub}" if sub else str(args.command)
