"""Forms of the user-facing pages."""

from __future__ import annotations

import logging
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.views.decorators.debug import sensitive_variables

from . import api, services
from .exceptions import ManychatAPIError, ManychatAuthError, ProviderUnavailable
from .models import ManychatConnection

logger = logging.getLogger(__name__)

#: A Manychat page API key: the page id, a colon, letters and digits.
API_KEY_SHAPE = re.compile(r"\A[0-9]{1,32}:[A-Za-z0-9]{1,200}\Z")


class ApiKeyForm(forms.Form):
    """Verify a page API key with Manychat (``getInfo``) before anything is saved.

    Errors never repeat the key, and the widget never renders it back.
    """

    api_key = forms.CharField(
        label="Page API key",
        max_length=256,
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"}
        ),
        help_text="In Manychat: Settings → API → Generate your API key. It looks like 1234567:0a1b2c3d…",
        error_messages={"required": "Paste your page API key.", "max_length": "This is too long for an API key."},
    )

    #: True when Manychat could not be reached: the key was not judged.
    unavailable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page: dict[str, Any] = {}

    @sensitive_variables("key")
    def clean_api_key(self) -> str:
        key: str = self.cleaned_data["api_key"]
        if not API_KEY_SHAPE.match(key):
            # Checked before any request, so a mistyped key never leaves this site.
            raise ValidationError(
                "This is not a Manychat page API key. It looks like 1234567:0a1b2c3d… "
                "(digits, a colon, then letters and digits): copy it again from Settings → API.",
                code="shape",
            )
        return key

    @sensitive_variables("cleaned", "key")
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        key = cleaned.get("api_key")
        if key:
            self.page = self._verify(key)
        return cleaned

    @sensitive_variables("key")
    def _verify(self, key: str) -> dict[str, Any]:
        try:
            return api.page_fields(api.get_page_info(key))
        except ManychatAuthError as exc:
            logger.info("Manychat refused a page API key (%s).", exc.code)
            raise ValidationError(
                "Manychat did not accept this API key. Check that you copied all of it and that it was not "
                "revoked in Manychat (Settings → API).",
                code="refused",
            ) from None
        except ProviderUnavailable as exc:
            logger.warning("Could not verify a page API key: Manychat unavailable (%s).", exc.code)
            self.unavailable = True
            raise ValidationError("We could not reach Manychat, try again later.", code="unavailable") from None
        except ManychatAPIError as exc:
            logger.info("Manychat answered an error to a page API key (%s).", exc.code)
            raise ValidationError(self._refusal(exc, key), code="refused") from None

    @staticmethod
    @sensitive_variables("key")
    def _refusal(exc: ManychatAPIError, key: str) -> str:
        if exc.code == "invalid_response":
            return "Manychat's answer could not be understood, so the key was not saved. Try again later."
        message = "Manychat did not accept this API key"
        # Manychat's own words help ("this page is not PRO"), as long as they do not repeat the key.
        reason = exc.api_message.strip()
        if reason and key not in reason and key.split(":", 1)[-1] not in reason:
            return f"{message}: {reason}"
        return f"{message}."

    def save(self, user: Any) -> tuple[ManychatConnection, bool]:
        """Create the user's API-key connection to the verified page, or update it in place."""
        return services.save_connection(
            user,
            auth_type=ManychatConnection.AuthType.API_KEY,
            access_token=self.cleaned_data["api_key"],
            token_type="Bearer",
            expires_at=None,
            page=self.page,
        )
