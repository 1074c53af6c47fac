"""Images a member attaches to a prompt in Discord or the web UI, sent to a vision-capable
account as Chat Completions image parts and stored once each, by hash.

The fronts download the image at once (Discord's links expire) and hand the bytes over; the
core builds the user message (the prompt as a text part, then each image as a ``data:`` URL),
stores it as the turn's exchange with the images by SHA-256 (core/exchange.py), and sends the
stored images again with the turns that follow, so "and what is in its top corner?" still
sees the picture. The type is read from the bytes, not from the name or what the browser
said: a ``.png`` that is a HEIC photo would be refused by the upstream after a slot was taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import exchange
from .errors import TooLarge
from .exchange import Attachment, Draft
from .wire import Message

IMAGE_TOKENS = 800
"""What one image is counted as in the context budget: OpenAI's high-detail tiles make a
1024 × 1024 image 765 tokens; a rough upper figure keeps the history within the window."""

SENT_TYPES = ("PNG", "JPEG", "GIF", "WebP")

def prompt_for(count: int) -> str:
    """The prompt of a message that brings images and no words."""
    return "What is in this image?" if count == 1 else "What is in these images?"


@dataclass(frozen=True, slots=True)
class ImageFile:
    name: str
    mime_type: str
    data: bytes


def sniff(data: bytes) -> str | None:
    """The image type OpenAI-compatible vision models take, read from the file's first
    bytes; None for anything else (BMP, HEIC, TIFF, not an image)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def draft(prompt: str, images: tuple[ImageFile, ...], limit: int) -> Draft:
    """What the turn stores, and sends once restored: the member's message as content parts
    (the prompt, then each image by reference) and the images once each. Refused with 413
    past ``limit`` bytes in all, as a /v1 request is."""
    total = sum(len(image.data) for image in images)
    if total > limit:
        raise TooLarge(
            f"the images attached have {total:,} bytes in all; the limit is {limit:,} bytes "
            "([chat] max_attachment_bytes)", code="attachments_too_large")
    found: dict[str, Attachment] = {}
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    for image in images:
        digest = hashlib.sha256(image.data).hexdigest()
        found.setdefault(digest, Attachment(digest, image.mime_type, image.data))
        parts.append({"type": "image_url", "image_url": {"url": exchange.REF + digest}})
    return Draft("chat", [{"role": "user", "content": parts}], list(found.values()))


def sendable(draft: Draft) -> Message:
    """The draft's message with its images inline again, as the upstream takes them."""
    restored: Message = exchange.restore(draft.messages[-1],
                                         {a.sha256: a for a in draft.attachments})
    return restored


def stored_content(turn_exchange: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """A front's turn with images: its user message's parts, images still by reference.
    None for a turn without images (or a /v1 turn, whose context its caller keeps)."""
    if not turn_exchange or turn_exchange.get("api") != "chat":
        return None
    messages = turn_exchange.get("messages")
    if not isinstance(messages, list) or len(messages) != 1:
        return None
    message = messages[0]
    content = message.get("content") if isinstance(message, dict) else None
    if message.get("role") != "user" or not isinstance(content, list) \
            or not any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
        return None
    return content


def image_count(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


def restored_draft(content: list[dict[str, Any]],
                   found: Mapping[str, Attachment]) -> Draft:
    """A stored turn's message and images again, for the turn that replaces it."""
    attachments = [found[h] for h in sorted(exchange.references(content)) if h in found]
    return Draft("chat", [{"role": "user", "content": content}], attachments)
