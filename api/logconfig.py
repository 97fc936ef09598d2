"""Logging for ``callgate serve``: our access log (route templates only), no uvicorn
access log (it prints raw paths and query strings, which can carry phone numbers).

Records are written to stderr by a thread of their own (BackgroundStderrHandler): the
access log is written from the event loop's thread, once per request, and a write to a file
or a slow pipe can block for as long as the disk takes (an ext4 journal commit behind a
database fsync: tens of ms), holding up every request of the process meanwhile."""

from __future__ import annotations

import atexit
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class BackgroundStderrHandler(QueueHandler):
    """Queues each record (formatted by the caller's thread: no reference to its arguments
    is kept); a listener thread writes them to stderr in order. Closing it (dictConfig does,
    on reconfiguration; and at exit) writes what is queued first."""

    def __init__(self, fmt: str = FORMAT) -> None:
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(q)
        target = logging.StreamHandler(sys.stderr)
        target.setFormatter(logging.Formatter(fmt))
        self.listener: QueueListener | None = QueueListener(q, target)
        self.listener.start()
        atexit.register(self.close)

    def close(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop()  # drains the queue, then joins the thread
        super().close()


def log_config(level: str = "INFO") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "stderr": {"()": BackgroundStderrHandler, "fmt": FORMAT},
        },
        "loggers": {
            "callgate": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "apscheduler": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
