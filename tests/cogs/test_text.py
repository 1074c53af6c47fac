"""Splitting replies into Discord messages: length, cut points, code fences."""

from __future__ import annotations

import random

import pytest

from cogs.utils.text import MESSAGE_LIMIT, clip, open_fence, shorten, split_message


def test_short_text_is_one_message() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("") == []
    assert split_message("  \n ") == []


def test_exactly_the_limit_fits() -> None:
    text = "x" * MESSAGE_LIMIT
    assert split_message(text) == [text]


def test_long_prose_is_cut_at_line_breaks() -> None:
    lines = [f"line {i} " + "word " * 12 for i in range(200)]
    text = "\n".join(lines)
    chunks = split_message(text)
    assert len(chunks) > 1
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    # Cut at line breaks: every chunk holds whole lines, and nothing is lost.
    assert "\n".join(chunks) == text
    assert all(c.split("\n")[-1] in lines for c in chunks)


def test_a_line_without_breaks_is_cut_at_spaces_then_anywhere() -> None:
    words = "word " * 1000
    chunks = split_message(words)
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert all(c.endswith("word ") or c.endswith("word") for c in chunks)
    assert "".join(chunks) == words
    blob = "y" * 4500
    assert [len(c) for c in split_message(blob)] == [1996, 1996, 508]
    assert "".join(split_message(blob)) == blob


def test_an_open_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # a line of code" for i in range(150))
    text = "Here is the program:\n```python\n" + code + "\n```\nThat was it."
    chunks = split_message(text)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert len(chunk) <= MESSAGE_LIMIT
        assert open_fence(chunk) is None, chunk[-80:]
    assert chunks[0].endswith("\n```")
    for chunk in chunks[1:]:
        assert chunk.startswith("```python\n")
    # The code survives whole: strip the added fences and compare.
    rebuilt = chunks[0].removesuffix("\n```")
    for chunk in chunks[1:-1]:
        rebuilt += "\n" + chunk.removeprefix("```python\n").removesuffix("\n```")
    rebuilt += "\n" + chunks[-1].removeprefix("```python\n")
    assert rebuilt == text


def test_fence_state() -> None:
    assert open_fence("```py\nx = 1\n") == "```py"
    assert open_fence("```py\nx = 1\n```\n") is None
    assert open_fence("inline ```one liner``` here") is None
    assert open_fence("```one liner```") is None
    assert open_fence("```\nplain") == "```"
    assert open_fence("still inside\n```\nout", "```js") is None
    assert open_fence("```weird info string with spaces") == "```weird"
    assert open_fence("```<script>") == "```"


@pytest.mark.parametrize("seed", range(20))
def test_random_markdown_always_splits_into_valid_messages(seed: int) -> None:
    rng = random.Random(seed)
    parts = []
    for _ in range(rng.randint(5, 60)):
        kind = rng.random()
        if kind < 0.3:
            body = "\n".join("code " * rng.randint(0, 30) for _ in range(rng.randint(1, 40)))
            parts.append(f"```{rng.choice(['', 'py', 'rust'])}\n{body}\n```")
        elif kind < 0.4:
            parts.append("x" * rng.randint(1, 5000))
        else:
            parts.append(" ".join("word" for _ in range(rng.randint(1, 400))))
    text = "\n".join(parts)
    chunks = split_message(text)
    assert chunks
    for chunk in chunks:
        assert 0 < len(chunk) <= MESSAGE_LIMIT
        assert open_fence(chunk) is None
        assert chunk.strip()


def test_shorten_and_clip() -> None:
    assert shorten("a  b\nc", 10) == "a b c"
    assert shorten("abcdefghij", 5) == "abcd…"
    assert clip("ab\ncdefgh", 5) == "ab\nc…"
    assert clip("abc", 5) == "abc"
