"""Files attached to a prompt: text files are read and given to the model as text, under their
names; anything else is refused with a short reason naming the file, and the rest goes on.

Fronts (the Discord bot, the web UI) download the files; this module decides what each one is
and how it joins the prompt. Images are recognised but not taken yet: they need the content
parts of a vision-capable account, and are refused with a reason saying so until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

Kind = Literal["text", "image", "other"]

TEXT_SUFFIXES = frozenset({
    # prose and data
    ".txt", ".md", ".markdown", ".rst", ".json", ".jsonl", ".csv", ".tsv", ".log", ".xml",
    ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env.example", ".html", ".htm",
    ".css", ".svg", ".sql", ".diff", ".patch", ".tex", ".srt", ".vtt",
    # code
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".kts",
    ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m",
    ".scala", ".lua", ".pl", ".r", ".jl", ".hs", ".ex", ".exs", ".erl", ".clj", ".dart",
    ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".vue", ".svelte", ".gradle",
    ".proto", ".graphql", ".tf", ".nix", ".zig", ".asm", ".s",
})
TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", ".gitignore",
                        ".editorconfig", "cmakelists.txt"})
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml",
              "application/toml", "application/javascript", "application/sql")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".heic"})

NO_IMAGES = "this conversation's account does not take images yet"


@dataclass(frozen=True, slots=True)
class TextFile:
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class FileRefusal:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} was not read: {self.reason}"


def kind_of(name: str, content_type: str | None) -> Kind:
    """What a file is, by its name first (Discord and browsers guess types loosely), then by
    its declared type."""
    path = PurePosixPath(name.lower())
    media = (content_type or "").split(";")[0].strip().lower()
    if path.suffix in IMAGE_SUFFIXES or (media.startswith("image/") and "svg" not in media):
        return "image"
    if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES or media.startswith(TEXT_TYPES):
        return "text"
    return "other"


def refusal_before_reading(name: str, content_type: str | None, size: int,
                           max_bytes: int) -> FileRefusal | None:
    """Why a file will not be read, known before it is downloaded; None: read it."""
    kind = kind_of(name, content_type)
    if kind == "image":
        return FileRefusal(name, NO_IMAGES)
    if kind == "other":
        return FileRefusal(name, "only text files (text, Markdown, code, JSON, CSV, logs) "
                                 "are read")
    if size > max_bytes:
        return FileRefusal(name, f"it has {_size(size)}; text files are read up to "
                                 f"{_size(max_bytes)}")
    return None


def decode(name: str, data: bytes, max_bytes: int) -> TextFile | FileRefusal:
    """A downloaded text file as text, or why not (too large after all, not UTF-8, binary)."""
    if len(data) > max_bytes:
        return FileRefusal(name, f"it has {_size(len(data))}; text files are read up to "
                                 f"{_size(max_bytes)}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FileRefusal(name, "it is not UTF-8 text")
    if "\x00" in text:
        return FileRefusal(name, "it is binary, not text")
    return TextFile(name, text.replace("\r\n", "\n"))


def with_files(prompt: str, files: list[TextFile]) -> str:
    """The prompt followed by each file, fenced under its name (a fence longer than any run
    of backticks in the file, so the file cannot close it)."""
    parts = [prompt.strip()] if prompt.strip() else []
    for file in files:
        fence = "`" * max(3, _longest_backticks(file.text) + 1)
        parts.append(f"File: {file.name}\n{fence}\n{file.text.rstrip()}\n{fence}")
    return "\n\n".join(parts)


def _longest_backticks(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


def _size(n: int) -> str:
    """Exact below 10 MB, so a file just past the limit does not read as the limit."""
    if n < 10 * 1024 * 1024:
        return f"{n:,} bytes"
    return f"{n / 1024 / 1024:.0f} MB"
