"""Who is calling the API: a session user (with CSRF, as for any Django view) or a bearer token.

Tokens are signed with the project's SECRET_KEY (no table): ``manage.py asyncjobs api-token
<username>`` mints one; it is valid for ``ASYNCJOBS["API_TOKEN_MAX_AGE_SECONDS"]`` and only while
the user exists and is active. Scripts send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest

from ..conf import get_settings

_SALT = "django_asyncjobs.api.token"


def make_token(user: Any) -> str:
    """Return a bearer token for *user*.

    Example::

        make_token(User.objects.get(username="deploy-bot"))   # 'eyJ1IjoxfQ:1v...'
    """
    return signing.TimestampSigner(salt=_SALT).sign_object({"u": user.pk})


def token_user(request: HttpRequest) -> Any | None:
    """Return the active user of a valid ``Authorization: Bearer`` token, else ``None``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        data = signing.TimestampSigner(salt=_SALT).unsign_object(
            token.strip(), max_age=get_settings().api_token_max_age_seconds
        )
    except signing.BadSignature:
        return None
    model = get_user_model()
    return model._default_manager.filter(pk=data.get("u"), is_active=True).first()
