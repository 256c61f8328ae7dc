"""Throughput and latency benchmarks for pgactors, side by side with pgbench and psycopg.

Run ``python -m benchmarks --help`` from the repository root. This is a script, not a
test: nothing here is collected by pytest, and no test asserts on performance.
"""
