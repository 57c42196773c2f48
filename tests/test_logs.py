"""pyproxy.logs: where log records go and how they look, as text and as JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pyproxy import logs


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (configure replaces its handlers)."""
    logger = logging.getLogger()
    saved = logger.handlers[:], logger.level
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])


def test_text_lines(root: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("info", "text", stream)
    logging.getLogger("pyproxy.test").info("hello %s", "world")
    logging.getLogger("pyproxy.test").debug("not shown")
    [line] = stream.getvalue().splitlines()
    assert line.endswith(" INFO pyproxy.test: hello world")


def test_json_lines(root: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    log = logging.getLogger("pyproxy.test")
    log.debug("x=%d", 1)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    log.info("ignored", extra={"fields": {"method": "GET", "status": 200}})
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "x=1" and first["level"] == "debug"
    assert first["logger"] == "pyproxy.test" and first["time"].endswith("+00:00")
    assert second["message"] == "failed" and "ValueError: boom" in second["exception"]
    assert "\n" not in stream.getvalue().splitlines()[1]  # the traceback stays on its line
    assert third == {**{k: third[k] for k in ("time", "level", "logger")},
                     "method": "GET", "status": 200}


def test_level_in_any_case(root: logging.Logger) -> None:
    logs.configure("Warning", "text", io.StringIO())
    assert root.level == logging.WARNING
    assert len(root.handlers) == 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_fast_path_writes_what_the_handler_would(
    root: logging.Logger, log_format: str
) -> None:
    from pyproxy.web.access_log import _Line

    stream = io.StringIO()
    logs.configure("info", log_format, stream)
    fields = {"method": "GET", "path": "/simple/x/", "status": 200, "bytes": 10,
              "duration_ms": 1.5, "cache": "-", "remote": "127.0.0.1", "user": None, "agent": "pip"}
    record = logging.LogRecord("pyproxy.access", logging.INFO, __file__, 0, _Line(fields), None, None)
    record.fields = fields
    root.handlers[0].handle(record)
    assert logs.ACCESS_SINK is not None and logs.ACCESS_SINK.active()
    logs.ACCESS_SINK.write("pyproxy.access", fields, _Line(fields))
    slow, fast = stream.getvalue().splitlines()
    if log_format == "json":
        slow_doc, fast_doc = json.loads(slow), json.loads(fast)
        assert slow_doc.pop("time")[:19] == fast_doc.pop("time")[:19]
        assert slow_doc == fast_doc
    else:
        assert slow[:19] == fast[:19] and slow[23:] == fast[23:]  # same but for the milliseconds
        assert len(slow) == len(fast)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_bytes_that_are_not_utf8_are_written_escaped(root: logging.Logger, log_format: str) -> None:
    """What a client sent may hold bytes that are not UTF-8 (lone surrogates, as aiohttp decodes
    them): every line is still written, with \\xNN escapes, by the handler and the fast path."""
    from pyproxy.web.access_log import _Line

    stream = io.StringIO()
    logs.configure("info", log_format, stream)
    logging.getLogger("pyproxy.test").warning("GET %s failed", "/x/\udcff")
    fields = {"method": "GET", "path": "/simple/x/", "status": 200, "bytes": 10,
              "duration_ms": 1.5, "cache": "-", "remote": "127.0.0.1", "user": None,
              "agent": "pip \udcff\udcfe é"}
    assert logs.ACCESS_SINK is not None
    logs.ACCESS_SINK.write("pyproxy.access", dict(fields), _Line(fields))
    logs.ACCESS_SINK.flush()
    warning, access = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(warning)["message"] == "GET /x/\\xff failed"
        assert json.loads(access)["agent"] == "pip \\xff\\xfe é"
    else:
        assert warning.endswith("GET /x/\udcff failed")  # text: the stream's own error handler
        assert access.endswith(' agent="pip \\\\xff\\\\xfe é"')


def test_printable() -> None:
    assert logs.printable("pip/25.1") == "pip/25.1"
    assert logs.printable("jörg") == "jörg"
    assert logs.printable("a\udcffb\udc80") == "a\\xffb\\x80"
    assert logs.printable("\ud800") == "\\ud800"  # a surrogate no byte decodes to


class _Writes(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_access_lines_of_one_iteration_go_out_in_one_write_and_in_order(
    root: logging.Logger,
) -> None:
    import asyncio

    from pyproxy.web.access_log import _Line

    stream = _Writes()
    logs.configure("info", "text", stream)
    sink = logs.ACCESS_SINK
    assert sink is not None

    def access(path: str) -> None:
        fields = {"method": "GET", "path": path, "status": 200, "bytes": 10, "duration_ms": 1.5,
                  "cache": "-", "remote": "127.0.0.1", "user": None, "agent": "pip"}
        sink.write("pyproxy.access", fields, _Line(fields))

    for index in range(3):
        access(f"/simple/p{index}/")
    assert stream.getvalue() == ""  # written after the iteration
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == 1 and len(stream.getvalue().splitlines()) == 3
    access("/simple/before/")
    logging.getLogger("pyproxy.test").warning("after")  # another record: the pending line first
    access("/simple/later/")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert "/simple/before/" in lines[3] and "after" in lines[4] and "/simple/later/" in lines[5]
    assert all(line.endswith("agent=pip") for line in lines if "access" in line)
