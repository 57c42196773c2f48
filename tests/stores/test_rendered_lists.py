"""pyproxy.stores.rendered_lists: a rendered list and its gzip copy, written in one pass and
put in place whole; only the most recent lists stay."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from pyproxy.stores.rendered_lists import RenderedLists


def test_the_body_and_its_copy_are_written_in_one_pass(tmp_path: Path) -> None:
    lists = RenderedLists(tmp_path / "lists")
    assert not lists.ready("x")

    def write(out: BinaryIO) -> None:
        for n in range(10_000):
            out.write(f"<a href='p{n}/'>P{n}</a>\n".encode())

    lists.build("x", write)
    plain, compressed = lists.paths("x")
    assert lists.ready("x")
    assert gzip.decompress(compressed.read_bytes()) == plain.read_bytes()
    assert plain.read_bytes().startswith(b"<a href='p0/'>P0</a>\n")
    assert compressed.stat().st_size < plain.stat().st_size / 4
    # the same bytes compress to the same copy (no time stamp), in any worker
    lists.build("y", write)
    assert lists.paths("y")[1].read_bytes() == compressed.read_bytes()
    assert sorted(p.name for p in lists.directory.iterdir() if p.name != "locks") == [
        "x.body", "x.body.gz", "y.body", "y.body.gz",
    ]


def test_a_failed_rendering_leaves_nothing(tmp_path: Path) -> None:
    lists = RenderedLists(tmp_path / "lists")

    def failing(out: BinaryIO) -> None:
        out.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        lists.build("x", failing)
    assert not lists.ready("x")
    assert [p.name for p in lists.directory.iterdir() if p.name != "locks"] == []


def test_only_the_most_recent_lists_stay(tmp_path: Path) -> None:
    lists = RenderedLists(tmp_path / "lists", keep=3)
    for n in range(5):
        lists.build(f"l{n}", lambda out: out.write(b"body"))
        for path in lists.paths(f"l{n}"):
            os.utime(path, (n, n))  # oldest first
    assert [n for n in range(5) if lists.ready(f"l{n}")] == [2, 3, 4]
    assert not lists.paths("l0")[1].exists()
