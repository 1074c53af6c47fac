"""Files attached to a prompt: which are read, how they join it, why others are refused."""

from __future__ import annotations

import pytest

from core.attachments import (
    Attached,
    FileRefusal,
    Limits,
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
    assert str(refusal_before_reading("a.zip", None, 10, 100)) == (
        "a.zip was not read: only text files (text, Markdown, code, JSON, CSV, logs) and "
        "images are read")
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


PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 92  # 100 bytes


def test_a_message_s_files_each_read_or_refused_with_the_reason() -> None:
    attached = Attached(Limits(text_bytes=50, image_bytes=250))
    sent = [("notes.txt", "text/plain", b"some notes"), ("a.png", "image/png", PNG),
            ("big.log", None, b"x" * 51), ("b.PNG", None, PNG),
            ("c.png", "image/png", PNG),  # 300 bytes of images with a and b: past the limit
            ("photo.jpg", "image/jpeg", b"\x00\x00\x00\x18ftypheic" + b"x" * 20),
            ("tool.exe", "application/octet-stream", b"MZ")]
    for name, content_type, data in sent:
        if attached.wanted(name, content_type, len(data)):
            attached.add(name, content_type, data)
    assert attached.read == ["notes.txt", "a.png", "b.PNG"]
    assert [(i.name, i.mime_type) for i in attached.images] == [("a.png", "image/png"),
                                                               ("b.PNG", "image/png")]
    assert attached.prompt("Look") == "Look\n\nFile: notes.txt\n```\nsome notes\n```"
    assert [str(r) for r in attached.refused] == [
        "big.log was not read: it has 51 bytes; text files are read up to 50 bytes",
        "c.png was not read: with the images before it, it would pass the 250 bytes one "
        "message may carry",
        "photo.jpg was not read: only PNG, JPEG, GIF and WebP images are sent to the model",
        "tool.exe was not read: only text files (text, Markdown, code, JSON, CSV, logs) and "
        "images are read"]


def test_images_refused_where_the_account_cannot_see_them() -> None:
    attached = Attached(Limits(50, 10_000, images_refused="this model does not read images"))
    assert not attached.wanted("a.png", "image/png", 100)  # not even downloaded
    assert attached.wanted("b.txt", None, 5)
    assert [str(r) for r in attached.refused] == [
        "a.png was not read: this model does not read images"]
    big = Attached(Limits(50, 99))
    assert not big.wanted("a.png", "image/png", 100)
    assert str(big.refused[0]) == "a.png was not read: it has 100 bytes; images are taken up " \
                                  "to 99 bytes"
