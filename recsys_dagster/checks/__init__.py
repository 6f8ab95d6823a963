"""Data quality: Great Expectations expectation suites (expectations.py), their runner and
results (suites.py), and the Dagster asset checks built on them (asset_checks.py).
GX itself is imported lazily, inside functions."""
