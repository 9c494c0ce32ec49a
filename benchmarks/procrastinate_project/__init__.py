"""The procrastinate side of ``benchmarks/compare.py``: a tiny Django project with a no-op task.

It runs only from ``benchmarks/.procrastinate-venv`` (made by the script), never from the
project's venv, which does not have procrastinate.
"""
