"""Benchmarks of mentionsync against the bundled simulator: `python -m bench`.

Each scenario starts its own simulator process, a fresh Postgres database and real
Celery worker and beat processes, measures one behaviour over a steady window and
reports it next to its target and baseline (see bench/harness.py).
"""
