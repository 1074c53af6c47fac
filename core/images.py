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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import exchange
from .errors import TooLarge
from .exchange import Attachment, Draft
from .models import Turn
from .wire import Message

IMAGE_TOKENS = 800
"""What one image is counted as in the context budget: OpenAI's high-detail tiles make a
1024 × 1024 image 765 tokens; a rough upper figure keeps the history within the window."""

SENT_TYPES = ("PNG", "JPEG", "GIF", "WebP")
"""The image types sent to a model; others (BMP, HEIC, TIFF) are refused with a note."""


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
    return {"role": "user", "content": with_images(draft.messages[-1]["content"],
                                                   {a.sha256: a for a in draft.attachments})}


def image_refs(content: Any) -> list[str]:
    """The hashes the image parts of a message's content refer to, in order. Only image
    parts: text that happens to read ``attachment:<hash>`` is the member's words."""
    if not isinstance(content, list):
        return []
    return [url[len(exchange.REF):] for part in content
            if isinstance(part, dict) and part.get("type") == "image_url"
            and isinstance(url := (part.get("image_url") or {}).get("url"), str)
            and url.startswith(exchange.REF)]


def with_images(content: list[dict[str, Any]],
                found: Mapping[str, Attachment]) -> list[dict[str, Any]]:
    """The content with each image part's reference replaced by its data (those found)."""
    out = []
    for part in content:
        refs = image_refs([part])
        if refs and refs[0] in found:
            url = exchange.data_url(found[refs[0]])
            part = {**part, "image_url": {**part["image_url"], "url": url}}
        out.append(part)
    return out


def stored_content(turn_exchange: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """A front's turn with images: its user message's parts, images still by reference.
    None for a turn without images (or a /v1 turn, whose context its caller keeps)."""
    if not turn_exchange or turn_exchange.get("api") != "chat":
        return None
    messages = turn_exchange.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or \
            not isinstance(message := messages[0], dict):
        return None
    content = message.get("content")
    if message.get("role") != "user" or not image_refs(content):
        return None
    assert isinstance(content, list)
    return content


def image_count(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


NOT_RESENT = "[an earlier image, not sent again]"


def resend_plan(recent_first: Sequence[Turn], limit: int) -> dict[str, list[dict[str, Any]]]:
    """The user messages (images by reference) of the turns that carried images, to send
    again with a follow-up so the model still sees them: the newest images first, up to
    ``limit`` bytes in all; older ones become a short note in their place, so a long
    conversation with pictures does not grow every request without bound. Read from the
    stored exchanges alone: no image is loaded here."""
    plan: dict[str, list[dict[str, Any]]] = {}
    left = limit
    for turn in recent_first:
        if not turn.exchange_json or '"image_url"' not in turn.exchange_json:
            continue
        stored = turn.exchange
        content = stored_content(stored)
        if content is None or stored is None:
            continue
        sizes = {a.get("sha256"): a.get("bytes") for a in stored.get("attachments") or []
                 if isinstance(a, dict)}
        kept: list[dict[str, Any]] = []
        for part in content:
            refs = image_refs([part])
            if refs:
                size = sizes.get(refs[0])
                if not isinstance(size, int) or size > left:
                    left = 0  # older images would not be sent either: keep the order clear
                    kept.append({"type": "text", "text": NOT_RESENT})
                    continue
                left -= size
            kept.append(part)
        plan[turn.id] = kept
    return plan


def restored_draft(content: list[dict[str, Any]],
                   found: Mapping[str, Attachment]) -> Draft:
    """A stored turn's message and images again, for the turn that replaces it."""
    attachments = [found[h] for h in dict.fromkeys(image_refs(content)) if h in found]
    return Draft("chat", [{"role": "user", "content": content}], attachments)
