from django.db import models


class Execution(models.Model):
    """One run of a test job's body, written by the job itself."""

    job = models.CharField(max_length=100)
    key = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)


class Transition(models.Model):
    """One ``job_status_changed`` signal, written by a receiver in whichever process sent it."""

    job_id = models.UUIDField(db_index=True)
    old_status = models.CharField(max_length=16, blank=True)  # "" for the first one
    new_status = models.CharField(max_length=16)
    error = models.TextField(blank=True)
    pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Makes the receiver's retried write idempotent (see durable.retry_through_restart).
    token = models.UUIDField(null=True, unique=True)
