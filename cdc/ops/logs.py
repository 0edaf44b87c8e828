"""Log setup: human-readable lines by default, one JSON object per line with `log.format: json`.

Lifecycle lines pass structured fields with `extra={"event": ..., ...}`; the JSON format keeps them
as keys. Nothing here ever receives a secret: configuration objects are never logged.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class _SourceField(logging.Filter):
    """Marks every line with the cluster source it is about: several sources' processes share one log."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def filter(self, record: logging.LogRecord) -> bool:
        record.source = self.source
        return True


def setup_logging(level: str = "INFO", fmt: str = "text", source: str | None = None) -> None:
    """`source`: the cluster source this process runs (`run --source`), in every line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        where = f" [{source}]" if source else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s"))
    if source:
        handler.addFilter(_SourceField(source))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    # The binlog library and kafka-python are chatty at INFO and log reconnects wpcdc handles itself.
    for noisy in ("kafka", "pymysqlreplication"):
        logging.getLogger(noisy).setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
    # kafka-python's event loop warns whenever a task ran over 0.1 s, which every busy or shared
    # machine sees; it is not a fault wpcdc could act on.
    logging.getLogger("kafka.net.selector").setLevel(logging.DEBUG if level == "DEBUG" else logging.ERROR)
