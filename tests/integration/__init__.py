"""In-process tests against PostgreSQL, with the memory transport or SQS on moto_server
(``pytest -m integration``)."""
