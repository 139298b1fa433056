"""Exceptions raised by the app.

Messages carry error codes and HTTP statuses, never response bodies, tokens or
client secrets, so they are safe to log and to show.
"""

from __future__ import annotations


class ManychatOAuthError(Exception):
    """Base class of every error this app raises."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TokenDecryptionError(ManychatOAuthError):
    """A stored value could not be decrypted with any configured key."""

    code = "decryption_failed"


class OAuthError(ManychatOAuthError):
    """The authorization server refused a request (RFC 6749 section 5.2)."""

    code = "oauth_error"


class InvalidGrant(OAuthError):
    """The code or refresh token is invalid, expired, revoked or already used."""

    code = "invalid_grant"


class InvalidClient(OAuthError):
    """The client id or secret was refused: a configuration error, not the user's."""

    code = "invalid_client"


class ProviderUnavailable(ManychatOAuthError):
    """A transient failure: connection error, timeout, 5xx or 429."""

    code = "provider_unavailable"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        #: Seconds the provider asked us to wait, when it said.
        self.retry_after = retry_after
        #: True when the request may have reached the provider (read timeout):
        #: a refresh token may have been rotated already.
        self.ambiguous = ambiguous


class InvalidTokenResponse(ManychatOAuthError):
    """The token endpoint answered 2xx with a body that is not a usable token."""

    code = "invalid_token_response"


class ManychatAPIError(ManychatOAuthError):
    """Manychat's API answered ``status: "error"`` (or an HTTP error)."""

    code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        api_message: str = "",
    ) -> None:
        super().__init__(message, code=code)
        self.status_code = status_code
        #: Manychat's own ``message`` field (it never contains the credential).
        self.api_message = api_message


class ManychatAuthError(ManychatAPIError):
    """Manychat refused the credential (HTTP 401 / "Wrong token")."""

    code = "unauthorized"
