"""Errors raised by the identity domain."""

from deskpilot.errors import AuthenticationRequired, Conflict, NotFound, ValidationFailed


class InvalidCredentials(AuthenticationRequired):
    code = "invalid_credentials"


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
