# Everything runs from a local virtualenv that `make install` builds from pinned versions.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export RECSYS_HOME ?= $(CURDIR)/.recsys
export DAGSTER_HOME ?= $(RECSYS_HOME)/dagster_home
export RECSYS_LAKE_URI ?= file://$(RECSYS_HOME)/lake
export MLFLOW_TRACKING_URI ?= sqlite:///$(RECSYS_HOME)/mlflow.db
export SPARK_LOCAL_IP ?= 127.0.0.1
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint ui serve bench clean

install: $(VENV)/.installed

# torch first: the pinned CPU wheel; any other order lets pip pull the CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[pipeline,serving,cpu,dev]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/recsys demo

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

serve: install
	$(BIN)/recsys serve --host 127.0.0.1 --port 8000

bench: install
	$(BIN)/python bench/sessionize.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/index.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/serving.py --no-ranker --out bench/results/serving_two_tower.json

clean:
	rm -rf $(RECSYS_HOME) spark-warehouse metastore_db derby.log
