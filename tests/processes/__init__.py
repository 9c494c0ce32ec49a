"""Real ``runscheduler`` / ``runworker`` subprocesses against PostgreSQL and moto_server
(``pytest -m processes``)."""
