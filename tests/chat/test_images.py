"""UC-003 images in chat messages: checks of what a client sent, and the note the stored message keeps."""

from __future__ import annotations

import base64

import pytest

from deskpilot.chat.errors import ImageInvalid, ImageTooLarge
from deskpilot.chat.images import check_image, check_images, decoded_size, image_note, with_image_note
from deskpilot.chat.schemas import MAX_IMAGE_BASE64_CHARS, ImageIn
from deskpilot.llm.messages import ImagePart

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
SAMPLES = {
    "image/png": PNG,
    "image/jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 40,
    "image/gif": b"GIF89a" + b"\x00" * 40,
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40,
}


def _image(raw: bytes, media_type: str = "image/png") -> ImageIn:
    return ImageIn.model_validate({"media_type": media_type, "data": base64.b64encode(raw).decode()})


@pytest.mark.parametrize("media_type", sorted(SAMPLES))
def test_each_accepted_format_passes(media_type: str) -> None:
    image = _image(SAMPLES[media_type], media_type)
    assert check_image(image) == ImagePart(media_type, image.data)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 100, 101])
def test_decoded_size_is_read_from_the_text(size: int) -> None:
    assert decoded_size(base64.b64encode(b"x" * size).decode()) == size


@pytest.mark.parametrize("data", ["not base64!", "iVBORw0KGgo", "data:image/png;base64,iVBORw0KGgo=", "iVBO\nRw0KGgo="])
def test_data_that_is_not_strict_base64_is_refused(data: str) -> None:
    with pytest.raises(ImageInvalid, match="Image 2 is not valid base64"):
        check_image(ImageIn(media_type="image/png", data=data), 2)


def test_bytes_that_contradict_the_media_type_are_refused() -> None:
    with pytest.raises(ImageInvalid, match=r"Image 1 is not a image/jpeg image"):
        check_image(_image(PNG, "image/jpeg"))
    with pytest.raises(ImageInvalid):
        check_image(_image(b"RIFF\x24\x00\x00\x00WAVEfmt ", "image/webp"))


def test_an_image_over_the_cap_is_refused_without_decoding() -> None:
    # Anthropic's 5 MiB is measured on the base64 text: 3,932,160 bytes decoded.
    most = MAX_IMAGE_BASE64_CHARS * 3 // 4
    at_cap = PNG + b"\x00" * (most - len(PNG))
    assert len(_image(at_cap).data) == MAX_IMAGE_BASE64_CHARS
    assert check_image(_image(at_cap)).media_type == "image/png"
    with pytest.raises(ImageTooLarge, match="at most 3,932,160 bytes") as refused:
        check_image(_image(at_cap + b"\x00"), 3)
    assert refused.value.extra == {"image": 3, "size": most + 1, "max_bytes": most}


def test_at_most_four_images() -> None:
    assert len(check_images([_image(PNG)] * 4)) == 4
    with pytest.raises(ImageTooLarge, match="at most 4 images"):
        check_images([_image(PNG)] * 5)


def test_the_stored_text_notes_the_images() -> None:
    assert image_note(1) == "[1 image attached]"
    assert with_image_note("Outlook says this", 2) == "Outlook says this\n\n[2 images attached]"
    assert with_image_note("", 1) == "[1 image attached]"
    assert with_image_note("no images", 0) == "no images"
