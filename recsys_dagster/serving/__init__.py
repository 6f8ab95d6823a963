"""The serving side: bundle -> recommendations (`engine`), and the FastAPI app (`app`).

Imports neither dagster, pyspark, torch nor mlflow. Import submodules directly
(`recsys_dagster.serving.engine`) so that the offline evaluation does not pull in FastAPI.
"""
