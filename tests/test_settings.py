"""Settings in one place: the project file, the environment over it, and loud errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from recsys_dagster.settings import Settings, read_project_file, write_project_file


def test_project_file_is_read_and_the_environment_wins(tmp_path: Path):
    path = tmp_path / "recsys.toml"
    write_project_file(path, {"start_date": "2024-01-02", "training_window_days": 14})
    write_project_file(path, {"lake_uri": "s3://bucket/prefix"})  # merges, keeps the rest
    assert read_project_file(path) == {
        "start_date": "2024-01-02",
        "training_window_days": 14,
        "lake_uri": "s3://bucket/prefix",
    }
    s = Settings.from_env({"RECSYS_CONFIG": str(path), "RECSYS_HOME": str(tmp_path)})
    assert (s.start_date, s.training_window_days, s.lake_uri) == (date(2024, 1, 2), 14, "s3://bucket/prefix")
    s = Settings.from_env({"RECSYS_CONFIG": str(path), "RECSYS_START_DATE": "2025-03-04"})
    assert s.start_date == date(2025, 3, 4) and s.training_window_days == 14
    empty = Settings.from_env({"RECSYS_CONFIG": str(path), "RECSYS_LAKE_URI": "", "RECSYS_START_DATE": ""})
    assert empty.lake_uri == "s3://bucket/prefix" and empty.start_date == date(2024, 1, 2)
    absent = Settings.from_env({"RECSYS_CONFIG": str(tmp_path / "none.toml"), "RECSYS_HOME": str(tmp_path)})
    assert absent.start_date == date(2026, 10, 5) and absent.lake_uri == f"file://{tmp_path / 'lake'}"


@pytest.mark.parametrize(
    "text, message",
    [
        ('start_dat = "2024-01-01"\n', "unknown setting"),
        ("start_date = \n", "not valid TOML"),
        ('start_date = "01/02/2024"\n', "RECSYS_START_DATE must be a date"),
        ("training_window_days = 2\n", "RECSYS_TRAINING_WINDOW_DAYS must be >= 5"),
    ],
)
def test_bad_project_file_fails_loudly(tmp_path: Path, text: str, message: str):
    path = tmp_path / "recsys.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"RECSYS_CONFIG": str(path)})


def test_serving_reads_the_lake_from_the_same_project_file(tmp_path: Path):
    from recsys_dagster.serving.settings import Settings as ServingSettings

    path = tmp_path / "recsys.toml"
    write_project_file(path, {"lake_uri": "s3://shared/lake", "s3_endpoint_url": "http://127.0.0.1:9"})
    s = ServingSettings.from_env({"RECSYS_CONFIG": str(path)})
    assert s.lake_uri == "s3://shared/lake"


@pytest.mark.slow
def test_every_command_sees_the_project_files_calendar(tmp_path: Path):
    """`recsys config` and the code location's partitions read the same file."""
    path = tmp_path / "recsys.toml"
    write_project_file(path, {"start_date": "2025-02-03", "training_window_days": 14})
    env = {**os.environ, "RECSYS_CONFIG": str(path), "RECSYS_HOME": str(tmp_path)}
    env.pop("RECSYS_START_DATE", None)
    env.pop("RECSYS_TRAINING_WINDOW_DAYS", None)
    out = subprocess.run(
        [sys.executable, "-m", "recsys_dagster.cli", "config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "2025-02-03" in out and "(file)" in out
    code = (
        "from recsys_dagster.jobs.partitions import DAILY, WEEKLY, TRAINING_WINDOW_DAYS\n"
        "print(DAILY.get_first_partition_key(), WEEKLY.get_first_partition_key(), TRAINING_WINDOW_DAYS)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert got.split() == ["2025-02-03", "2025-02-10", "14"]
