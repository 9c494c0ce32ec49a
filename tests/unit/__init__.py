"""Pure Python tests: no database, no SQS, no subprocess (``pytest -m unit``)."""
