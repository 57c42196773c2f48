"""Logging to stderr, as text or as one JSON object per line.

Records may carry a `fields` dict (the access log does): the JSON formatter merges it into the
object, and the text formatter shows the record's message, which renders the same fields.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TextIO

import orjson

from pyproxy.soon import Soon

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", then the record's `fields`, or "message" (and "exception")}."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        else:
            document["message"] = record.getMessage()
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at `level` or above to stderr (or `stream`) in `log_format`."""
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    global ACCESS_SINK
    if ACCESS_SINK is not None:
        ACCESS_SINK.flush()
    ACCESS_SINK = AccessSink(handler, log_format)
    return handler


class _Handler(logging.StreamHandler[TextIO]):
    """A StreamHandler that first writes the access lines waiting for the end of the loop
    iteration, so that the stream keeps the order in which things happened (on the loop's
    thread; another thread's record can only be ordered roughly anyway)."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = ACCESS_SINK
        if sink is not None and sink.handler is self:
            sink.flush_before_other_records()
        super().emit(record)


class AccessSink:
    """The access log's fast path: one line per request written straight to the handler's stream,
    looking exactly as the handler would write it, but without a LogRecord, a Formatter and the
    handler's lock (the access log is written from the event loop's thread only); the lines of
    one loop iteration in one write (pyproxy.soon)."""

    def __init__(self, handler: logging.StreamHandler[TextIO], log_format: str) -> None:
        self.handler = handler
        self._stream = handler.stream
        self._json = log_format == "json"
        self._second = -1
        self._stamp = ""
        # lines of this loop iteration, written together right after it (one write, not one
        # per request)
        self._lines: list[str] = []
        self._soon = Soon(self.flush)
        self._thread = 0  # that writes lines: the event loop's

    def active(self) -> bool:
        """Still the root logger's handler (tests and embedders may reconfigure logging)."""
        return self.handler in logging.getLogger().handlers

    def _asctime(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # strftime once a second, not once a request
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def write(self, logger: str, fields: dict[str, object], text: object) -> None:
        now = time.time()
        if self._json:
            document = {
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                "level": "info",
                "logger": logger,
                **fields,
            }
            line = orjson.dumps(document, default=str).decode()
        else:
            line = f"{self._asctime(now)} INFO {logger}: {text}"
        self._lines.append(line)
        self._thread = threading.get_ident()
        self._soon.due()

    def flush_before_other_records(self) -> None:
        if self._lines and threading.get_ident() == self._thread:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        lines = self._lines
        self._lines = []
        lines.append("")
        self._stream.write("\n".join(lines))
        self._stream.flush()


ACCESS_SINK: AccessSink | None = None
