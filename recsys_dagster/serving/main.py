"""`run(host, port)`: the serving process under uvicorn (the `recsys serve` command calls it)."""

from __future__ import annotations

import json
import logging
import sys

import uvicorn

from recsys_dagster.serving.app import create_app
from recsys_dagster.serving.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "info") -> None:
    """Access lines are already JSON: print the message bare, one line each, on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("recsys.serving.access")
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    other = logging.StreamHandler(sys.stderr)
    other.setFormatter(JsonFormatter())
    store = logging.getLogger("recsys.serving.store")
    store.handlers[:] = [other]
    store.setLevel(level.upper())
    store.propagate = False


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    *,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve until interrupted. Settings default to the environment (`Settings.from_env`)."""
    configure_logging(log_level)
    if not access_log:
        logging.getLogger("recsys.serving.access").setLevel(logging.WARNING)
    app = create_app(settings or Settings.from_env())
    # uvicorn's own access log is off: ours carries the model version and fallback.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="recsys serving")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args()
    run(args.host, args.port, log_level=args.log_level, access_log=not args.no_access_log)
