"""Operators as the admin and the HTTP API meet them: a logged-in staff client, a bearer token."""

from __future__ import annotations

import io

from django.contrib.auth.models import Permission, User
from django.core.management import call_command


def bearer_headers(*codenames: str, username: str = "bot") -> dict[str, str]:
    """Return the headers of an API call by a new user with the permissions *codenames*, whose
    token ``manage.py asyncjobs api-token`` minted."""
    user = User.objects.create_user(username, password="x")
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    out = io.StringIO()
    call_command("asyncjobs", "api-token", username, stdout=out, stderr=io.StringIO())
    return {"Authorization": f"Bearer {out.getvalue().strip()}"}
