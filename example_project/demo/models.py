"""A table for the aggregation job to chew on."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    """A sale; ``migrations/0002_seed_orders`` fills the table with 20,000 of them."""

    customer = models.CharField(max_length=40, db_index=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    created_at = models.DateTimeField()

    objects: models.Manager[Order] = models.Manager()

    def __str__(self) -> str:
        return f"{self.customer}: {self.amount}"
