"""A tiny Django project running Celery + SQS, for ``benchmarks/compare_celery.py``.

It lives in its own virtual environment (``benchmarks/.celery-venv``, made by the script): Celery is
not a dependency of django-asyncjobs, and nothing here is imported by the project's own code.
"""
