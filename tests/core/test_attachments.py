"""Files attached to a prompt: which are read, how they join it, why others are refused."""

from __future__ import annotations

import pytest

from core.attachments import (
    NO_IMAGES,
    FileRefusal,
    TextFile,
    decode,
    kind_of,
    refusal_before_reading,
    with_files,
)

pytestmark = pytest.mark.sqlite_only  # no storage involved


@pytest.mark.parametrize(("name", "content_type", "kind"), [
    ("notes.txt", None, "text"), ("README", None, "text"), ("main.RS", None, "text"),
    ("data.csv", "text/csv; charset=utf-8", "text"), ("x.unknown", "application/json", "text"),
    ("app.log", "application/octet-stream", "text"),  # the name decides first
    ("photo.JPG", None, "image"), ("shot", "image/png", "image"), ("logo.svg", None, "text"),
    ("archive.zip", "application/zip", "other"), ("noext", None, "other"),
])
def test_kinds(name: str, content_type: str | None, kind: str) -> None:
    assert kind_of(name, content_type) == kind


def test_refused_before_download_with_the_reason() -> None:
    assert refusal_before_reading("a.png", "image/png", 10, 100) == FileRefusal("a.png",
                                                                                 NO_IMAGES)
    too_big = refusal_before_reading("a.txt", None, 101, 100)
    assert str(too_big) == "a.txt was not read: it has 101 bytes; text files are read up to " \
                           "100 bytes"
    assert refusal_before_reading("a.txt", None, 100, 100) is None


def test_decoding() -> None:
    assert decode("a.txt", "\ufeffline\r\nnext".encode(), 100) == TextFile("a.txt",
                                                                          "line\nnext")
    assert decode("a.txt", b"\xff\xfe", 100) == FileRefusal("a.txt", "it is not UTF-8 text")
    assert decode("a.txt", b"a\x00b", 100) == FileRefusal("a.txt", "it is binary, not text")
    assert isinstance(decode("a.txt", b"x" * 101, 100), FileRefusal)  # the size lied


def test_files_follow_the_prompt_in_fences_they_cannot_close() -> None:
    files = [TextFile("a.md", "```py\nx\n```\n"), TextFile("b.txt", "plain")]
    assert with_files("Look:", files) == (
        "Look:\n\nFile: a.md\n````\n```py\nx\n```\n````\n\nFile: b.txt\n```\nplain\n```")
    assert with_files("  ", [TextFile("c.txt", "only")]) == "File: c.txt\n```\nonly\n```"
    assert with_files("just words", []) == "just words"
