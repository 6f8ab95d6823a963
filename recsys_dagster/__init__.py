"""recsys_dagster: a recommender system as a Dagster code location.

Importing the package is cheap and pulls in no heavy dependency: the serving image
imports `recsys_dagster.serving` and `recsys_dagster.lake` only.
"""

__version__ = "0.1.0"
