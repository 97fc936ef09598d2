"""The serve log handler: records reach stderr in order, written by a thread of its own, so
that a request's thread never waits for a slow stderr."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from api.logconfig import BackgroundStderrHandler, log_config


class SlowStream:
    """A stderr whose writes wait until ``go`` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.go.wait(timeout=30)
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"callgate.test-logconfig.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def test_a_log_call_does_not_wait_for_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = SlowStream()
    monkeypatch.setattr("sys.stderr", stream)
    handler = BackgroundStderrHandler()
    log = _logger(handler)
    caller = threading.Thread(target=lambda: [log.info("request %d", i) for i in range(3)])
    caller.start()
    caller.join(timeout=5)
    assert not caller.is_alive()  # returned while stderr is still blocked
    assert stream.written == []
    stream.go.set()
    handler.close()  # writes what is queued, in order
    lines = "".join(stream.written).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["request 0", "request 1",
                                                           "request 2"]
    assert all(" INFO callgate.test-logconfig." in line for line in lines)


def test_exceptions_are_written_too(capsys: pytest.CaptureFixture[str]) -> None:
    handler = BackgroundStderrHandler()
    log = _logger(handler)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    handler.close()
    err = capsys.readouterr().err
    assert "ERROR" in err and "failed" in err and "ValueError: boom" in err


def test_serve_logs_through_it() -> None:
    config: dict[str, Any] = log_config("INFO")
    assert config["handlers"]["stderr"]["()"] is BackgroundStderrHandler
    assert all(spec["handlers"] in ([], ["stderr"]) for spec in config["loggers"].values())
