"""Images in chat messages (UC-003): checking what a client sent, and the note the stored message keeps."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Final

from deskpilot.chat.errors import ImageInvalid, ImageTooLarge
from deskpilot.chat.schemas import MAX_IMAGE_BASE64_CHARS, MAX_IMAGES, ImageIn
from deskpilot.llm.messages import ImagePart

# The first bytes of each accepted format; a provider refuses an image whose bytes contradict its media type.
_SIGNATURES: Final[dict[str, tuple[bytes, ...]]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def decoded_size(data: str) -> int:
    """The byte length `data` decodes to, from its length and padding alone (nothing is decoded)."""
    return len(data) * 3 // 4 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)


def check_image(image: ImageIn, position: int = 1) -> ImagePart:
    """The image as an `ImagePart` once its data is strict base64 of at most MAX_IMAGE_BASE64_CHARS characters
    whose first bytes are those of its media type; `ImageTooLarge` or `ImageInvalid` (naming image `position`)."""
    if len(image.data) > MAX_IMAGE_BASE64_CHARS:
        size = decoded_size(image.data)
        most = decoded_size("x" * MAX_IMAGE_BASE64_CHARS)
        raise ImageTooLarge(
            f"Image {position} is {size:,} bytes; an image may have at most {most:,} bytes "
            f"({MAX_IMAGE_BASE64_CHARS:,} characters of base64)",
            extra={"image": position, "size": size, "max_bytes": most},
        )
    try:
        raw = base64.b64decode(image.data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInvalid(
            f"Image {position} is not valid base64 (send the bare base64 text, without a data: prefix)",
            extra={"image": position},
        ) from None
    signature_ok = raw.startswith(_SIGNATURES[image.media_type])
    if image.media_type == "image/webp":
        signature_ok = signature_ok and raw[8:12] == b"WEBP"
    if not signature_ok:
        raise ImageInvalid(
            f"Image {position} is not a {image.media_type} image", extra={"image": position},
        )
    return ImagePart.from_bytes(image.media_type, raw, image.data)


def check_images(images: Sequence[ImageIn]) -> tuple[ImagePart, ...]:
    """Every image checked (`check_image`), at most MAX_IMAGES of them."""
    if len(images) > MAX_IMAGES:
        raise ImageTooLarge(
            f"A message may carry at most {MAX_IMAGES} images; this one has {len(images)}",
            extra={"images": len(images), "max_images": MAX_IMAGES},
        )
    return tuple(check_image(image, position) for position, image in enumerate(images, start=1))


def image_note(count: int) -> str:
    """What the stored message says in place of its images: "[1 image attached]", "[2 images attached]"."""
    return f"[{count} image{'s' if count != 1 else ''} attached]"


def with_image_note(text: str, count: int) -> str:
    """The message text as stored: the text, then the note on a line of its own (the note alone without text)."""
    if not count:
        return text
    return f"{text}\n\n{image_note(count)}" if text else image_note(count)
