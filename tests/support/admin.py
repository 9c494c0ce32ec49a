"""Admin clients for tests: a logged-in staff user with exactly the permissions asked for."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.test import Client


def staff(*perms: str, username: str = "staff") -> Client:
    """Return a client logged in as a new staff user (*username*) with the permissions *perms*
    (codenames such as ``view_job``) and no other."""
    user = User.objects.create_user(username, password="x", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client
