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
