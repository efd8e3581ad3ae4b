"""Errors raised by the identity domain."""

from deskpilot.errors import AuthenticationRequired, Conflict, LimitExceeded, NotFound, ValidationFailed


class InvalidCredentials(AuthenticationRequired):
    code = "invalid_credentials"


class TooManyFailedLogins(LimitExceeded):
    """Sign-ins for one email are paused after repeated wrong passwords; `extra["retry_after_s"]` says how long."""

    code = "too_many_failed_logins"


class EmailTaken(Conflict):
    code = "email_taken"


class NameTaken(Conflict):
    code = "name_taken"


class WeakPassword(ValidationFailed):
    code = "weak_password"


class UserNotFound(NotFound):
    code = "user_not_found"


class TeamNotFound(NotFound):
    code = "team_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


class ClientNotFound(NotFound):
    code = "client_not_found"


class LastOwner(Conflict):
    code = "last_owner"
