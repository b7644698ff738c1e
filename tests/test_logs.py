"""Tests of controller.logs: the JSON log format."""

from __future__ import annotations

import json
import logging
import re
import sys

from controller.logs import JsonFormatter


def test_json_formatter_includes_extra_fields_and_exceptions() -> None:
    record = logging.LogRecord("controller.x", logging.ERROR, __file__, 1, "deleted %d", (3,), None)
    record.repository = "app"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "controller.x"
    assert entry["message"] == "deleted 3"
    assert entry["repository"] == "app"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(record))["exception"]
