"""Files attached to a prompt: text files are read and given to the model as text, under their
names; images go with the prompt as image parts (core/images.py) when the conversation's
account can see them; anything else is refused with a short reason naming the file, and the
rest goes on.

Fronts (the Discord bot, the web UI) download the files; this module decides what each one is,
whether it is worth downloading, and how it joins the prompt (``Attached``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from .images import SENT_TYPES, ImageFile, sniff

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
    """Why a text file will not be read, known before it is downloaded; None: read it.
    (Images are ``Attached``'s to judge: they need the conversation's account.)"""
    kind = kind_of(name, content_type)
    if kind != "text":
        return FileRefusal(name, "only text files (text, Markdown, code, JSON, CSV, logs) "
                                 "and images are read")
    if size > max_bytes:
        return FileRefusal(name, f"it has {_size(size)}; text files are read up to "
                                 f"{_size(max_bytes)}")
    return None


@dataclass(frozen=True, slots=True)
class Limits:
    text_bytes: int
    """The largest text file read (``[chat] max_text_file_bytes``)."""
    image_bytes: int
    """All the images of one message together (``[chat] max_attachment_bytes``)."""
    images_refused: str | None = None
    """Why images would not be seen here (the account cannot take them); None: they are."""


class Attached:
    """What the files of one message gave: text files read, images taken, and a refusal
    (which file, and why) for each of the others. A front asks ``wanted`` before
    downloading a file and hands its bytes to ``add``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.texts: list[TextFile] = []
        self.images: list[ImageFile] = []
        self.refused: list[FileRefusal] = []
        self.read: list[str] = []
        """The names of the files the model gets, in the order they came."""
        self._image_bytes = 0

    def wanted(self, name: str, content_type: str | None, size: int) -> bool:
        """Whether to download the file; when not, its refusal is noted."""
        if kind_of(name, content_type) != "image":
            refusal = refusal_before_reading(name, content_type, size, self.limits.text_bytes)
        elif self.limits.images_refused is not None:
            refusal = FileRefusal(name, self.limits.images_refused)
        else:
            refusal = self._image_too_large(name, size)
        if refusal is not None:
            self.refused.append(refusal)
        return refusal is None

    def add(self, name: str, content_type: str | None, data: bytes) -> None:
        """A downloaded file: read, or refused after all (its size lied, its bytes are not
        what its name says)."""
        if kind_of(name, content_type) != "image":
            outcome = decode(name, data, self.limits.text_bytes)
            if isinstance(outcome, TextFile):
                self.texts.append(outcome)
                self.read.append(name)
            else:
                self.refused.append(outcome)
            return
        mime_type = sniff(data)
        refusal = self._image_too_large(name, len(data))
        if mime_type is None:
            refusal = FileRefusal(name, f"only {', '.join(SENT_TYPES[:-1])} and "
                                        f"{SENT_TYPES[-1]} images are sent to the model")
        if refusal is not None:
            self.refused.append(refusal)
            return
        assert mime_type is not None
        self._image_bytes += len(data)
        self.images.append(ImageFile(name, mime_type, data))
        self.read.append(name)

    def refuse(self, name: str, reason: str) -> None:
        self.refused.append(FileRefusal(name, reason))

    def prompt(self, words: str) -> str:
        """The member's words with the text files after them."""
        return with_files(words, self.texts)

    def _image_too_large(self, name: str, size: int) -> FileRefusal | None:
        limit = self.limits.image_bytes
        if self._image_bytes + size <= limit:
            return None
        if self._image_bytes:
            return FileRefusal(name, f"with the images before it, it would pass the "
                                     f"{_size(limit)} one message may carry")
        return FileRefusal(name, f"it has {_size(size)}; images are taken up to "
                                 f"{_size(limit)}")


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
