"""Logging to stderr, as text or as one JSON object per line.

Records may carry a `fields` dict (the access log does): the JSON formatter merges it into the
object, and the text formatter shows the record's message, which renders the same fields.

Text that came from a client may hold bytes that are not UTF-8 (aiohttp keeps them in header
values as lone surrogates, "surrogateescape"): `printable` writes them as `\\xNN` escapes, and
a JSON line falls back to it rather than failing to encode.
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
        return dumps(document)


def printable(text: str) -> str:
    """`text`, with each byte that is not UTF-8 (a lone surrogate, as aiohttp decodes a header
    it could not read as UTF-8) written as a `\\xNN` escape: safe to encode, whatever the
    client sent."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte: `\udNNN`
            return text.encode("utf-8", "backslashreplace").decode()
    return text


def _printable_values(value: object) -> object:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable_values(v) for v in value]
    return value


def dumps(document: dict[str, object]) -> str:
    """One JSON line; text that is not UTF-8 is escaped (`printable`) rather than refused."""
    try:
        return orjson.dumps(document, default=str).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(
            _printable_values(document), default=lambda value: printable(str(value))
        ).decode()


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
            line = dumps(document)
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
