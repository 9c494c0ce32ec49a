"""The HTTP jobs API (opt-in): ``path("api/", include("django_asyncjobs.api.urls"))``."""
