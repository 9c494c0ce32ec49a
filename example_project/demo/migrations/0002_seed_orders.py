"""Seed 20,000 orders (the same ones every time) for the aggregation job."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from django.db import migrations

CUSTOMERS = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken"]


def seed(apps: Any, schema_editor: Any) -> None:
    Order = apps.get_model("demo", "Order")
    rng = random.Random(42)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    Order.objects.bulk_create(
        (
            Order(
                customer=rng.choice(CUSTOMERS),
                amount=Decimal(rng.randint(100, 50_000)) / 100,
                created_at=start + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 300)),
            )
            for _ in range(20_000)
        ),
        batch_size=5_000,
    )


def unseed(apps: Any, schema_editor: Any) -> None:
    apps.get_model("demo", "Order").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("demo", "0001_orders")]
    operations = [migrations.RunPython(seed, unseed)]
