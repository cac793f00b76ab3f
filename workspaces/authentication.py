"""`Authorization: Bearer <secret>` for machine calls."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from . import throttling
from .models import ApiKey
from .services import api_key_authenticate


class ApiKeyUser(AnonymousUser):
    """The request.user of an API-key call: authenticated, but not a person."""

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            # A signed-in person's call (SessionAuthentication, next) or an anonymous one, which
            # is throttled here: DRF checks throttles only after refusing it with a 401.
            if not getattr(getattr(request._request, "user", None), "is_authenticated", False):
                throttling.anonymous_hit(request)
            return None
        keyword, _, secret = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None
        secret = secret.strip()
        # Failures are counted per client address; past the limit they answer 429, so keys cannot
        # be guessed at speed. (Counted only on failure: a valid key costs no extra round trip.)
        if not secret:
            throttling.api_key_failure(request)
            raise exceptions.AuthenticationFailed("Empty API key: send 'Authorization: Bearer <secret>'.")
        api_key = api_key_authenticate(secret)
        if api_key is None:
            throttling.api_key_failure(request)
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return ApiKeyUser(), api_key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Shows the Bearer API key in the OpenAPI schema."""

    target_class = "workspaces.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key secret (mbk_…)."}
