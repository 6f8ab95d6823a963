"""The code location: assets, checks, jobs, schedules, sensors and resources, assembled."""

import warnings

from dagster import BetaWarning, Definitions, PreviewWarning

from recsys_dagster import settings

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
settings.apply_quiet_defaults()

from recsys_dagster.assets import deployment, evaluation, index, ingest, model, ranker, sessions, training  # noqa: E402
from recsys_dagster.checks.asset_checks import DAILY_CHECKS  # noqa: E402
from recsys_dagster.jobs.daily import daily_job, daily_schedule, landing_sensor  # noqa: E402
from recsys_dagster.jobs.weekly import rollback_job, weekly_job, weekly_schedule  # noqa: E402
from recsys_dagster.resources import build_resources  # noqa: E402

defs = Definitions(
    assets=[
        ingest.raw_events,
        ingest.raw_catalog,
        ingest.catalog,
        ingest.events,
        sessions.sessions,
        training.training_examples,
        model.two_tower_model,
        index.item_embeddings,
        index.faiss_index,
        ranker.ranker,
        evaluation.model_evaluation,
        deployment.deployment,
    ],
    asset_checks=[*DAILY_CHECKS, *training.TRAINING_CHECKS, *index.INDEX_CHECKS, *ranker.RANKER_CHECKS],
    jobs=[daily_job, weekly_job, rollback_job],
    schedules=[daily_schedule, weekly_schedule],
    sensors=[landing_sensor],
    resources=build_resources(settings.current()),
)
