"""The console log follows stderr as it is at each record (notebooks and test capture swap it)."""

import contextlib
import io

from vitssl.engine.logging import log, setup_console_logging


def test_console_log_writes_to_the_current_stderr():
    setup_console_logging()
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(first):
        log.info("to the first stream")
    first.close()  # a closed earlier stream must not be written to again
    with contextlib.redirect_stderr(second):
        log.info("to the second stream")
    assert "to the second stream" in second.getvalue()
    assert len([h for h in log.handlers if h.__class__.__name__ == "_CurrentStderrHandler"]) == 1


class _InterruptedAfterFirstWrite(io.StringIO):
    """A stderr whose process gets SIGINT (Python's KeyboardInterrupt) as soon as one write of
    the log record has returned: what happens when Ctrl-C lands while a line is being logged."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise KeyboardInterrupt
        return super().write(text)


def test_a_signal_while_logging_never_leaves_a_line_without_its_newline():
    setup_console_logging()
    stream = _InterruptedAfterFirstWrite()
    with contextlib.redirect_stderr(stream), contextlib.suppress(KeyboardInterrupt):
        log.info("loading the data set")
    # the stop report that follows must start a line of its own (tests/commands: stop one-liners)
    assert stream.getvalue().endswith("loading the data set\n")
