"""Errors raised by the chat domain, each with a stable code the API turns into problem+json."""

from __future__ import annotations

from deskpilot.errors import Conflict, NotFound, ValidationFailed


class ChatSessionNotFound(NotFound):
    code = "chat_session_not_found"


class TurnNotFound(NotFound):
    code = "chat_turn_not_found"


class ImageNotFound(NotFound):
    code = "image_not_found"


class ThreadBusy(Conflict):
    """SS-043: another turn of this session is still running."""

    code = "THREAD_BUSY"


class CannotSend(Conflict):
    """UC-003: the session's status does not take messages."""

    code = "session_not_accepting_messages"


class NothingToResume(Conflict):
    code = "nothing_to_resume"


class MessageEmpty(ValidationFailed):
    code = "message_empty"


class MessageTooLarge(ValidationFailed):
    code = "message_too_large"


class ImagesNotSupported(ValidationFailed):
    """SS-043's MODEL_DOES_NOT_SUPPORT_IMAGE_INPUT: a model of the chat route is not in `llm.vision_models`."""

    code = "MODEL_DOES_NOT_SUPPORT_IMAGE_INPUT"


class ImageInvalid(ValidationFailed):
    """UC-003: an image whose data is not base64, or not an image of its stated media type."""

    code = "image_invalid"


class ImageTooLarge(ValidationFailed):
    """UC-003: an image over the size cap, or more images than a message may carry."""

    code = "image_too_large"


class FixOutcomeRequired(Conflict):
    """UC-021: escalating while the active suggested fix has no outcome; the engineer records one first."""

    code = "fix_outcome_required"


class NothingToRegenerate(Conflict):
    code = "nothing_to_regenerate"
