from django.db import models


class Execution(models.Model):
    """One run of a test job's body, written by the job itself."""

    job = models.CharField(max_length=100)
    key = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
