"""Log lines (jobs/logs.py): one JSON object per line with time, level, logger, message and the ids of
what the line is about; the formatter alone, then real worker and API processes writing them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from service_helpers import ApiProcess, WorkerProcess, wait_for

from jobs import logs
from jobs.contract import TERMINAL_STATES


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON into a buffer (the root logger is left alone)."""
    buffer = io.StringIO()
    logger = logging.getLogger(f"echo.test.{id(buffer)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logs.handler("json", buffer)
    logger.addHandler(handler)
    yield logger, buffer
    logger.removeHandler(handler)
    logs.clear()


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_the_ids_in_context(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured
    # Given a context naming a job
    logs.set_context(job_id="job_abc", book_id="")
    # When a line with a newline and a quote in its message is written, then one outside the context
    logger.info('rendered "%s"\nin %d pieces', "hello", 3)
    logs.clear()
    logger.warning("no job here")
    # Then each is one line of JSON: UTC time, level, logger, the message as formatted, the job id in the first only
    first, second = lines(buffer)
    assert first["message"] == 'rendered "hello"\nin 3 pieces' and first["level"] == "INFO"
    assert first["logger"] == logger.name and first["job_id"] == "job_abc" and "book_id" not in first
    assert first["time"].endswith("Z") and datetime.fromisoformat(first["time"]).utcoffset().total_seconds() == 0
    assert second["level"] == "WARNING" and "job_id" not in second


def test_an_exception_is_a_field_of_its_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    # Given a book in context
    with logs.context(book_id="book_1"):
        # When an error is logged with its traceback
        try:
            raise ValueError("the segment is broken")
        except ValueError:
            logger.exception("book step failed")
    # Then the traceback is one field of the same single line, the message stays the message
    (line,) = lines(buffer)
    assert line["message"] == "book step failed" and line["level"] == "ERROR" and line["book_id"] == "book_1"
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert "ValueError: the segment is broken" in line["exception"]
    # And the context ended with the block
    assert logs.current() == {}


def test_a_call_s_own_ids_win_over_the_context(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    # Given a context naming a job and a book
    with logs.context(job_id="job_outer", book_id="book_1"):
        # When a line names another job itself
        logger.info("about another job", extra={"job_id": "job_inner"})
    # Then that job's id is the line's, the book's id still comes from the context
    (line,) = lines(buffer)
    assert line["job_id"] == "job_inner" and line["book_id"] == "book_1"


def test_the_text_format_names_the_ids_too() -> None:
    buffer = io.StringIO()
    logger = logging.getLogger("echo.test.text")
    logger.propagate = False
    handler = logs.handler("text", buffer)
    logger.addHandler(handler)
    try:
        # Given the text format and a job in context / When a warning is written
        with logs.context(job_id="job_t"):
            logger.warning("slow")
    finally:
        logger.removeHandler(handler)
    # Then the line names the level, the logger and the job before the message
    assert buffer.getvalue().rstrip().endswith("WARNING echo.test.text [job_id=job_t] slow")


def test_configuring_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        # Given / When logging is configured twice (as python -m worker, then Celery's setup_logging, do)
        logs.configure("json", "INFO", stream=io.StringIO())
        logs.configure("text", "DEBUG", stream=io.StringIO())
        # Then the root has one handler of ours, the second one, at the second level
        ours = [h for h in root.handlers if getattr(h, "_echo_handler", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.TextFormatter) and logs.configured()
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        logging.captureWarnings(False)


def test_an_unknown_format_is_refused() -> None:
    # Given / When a format that does not exist is asked for / Then it is refused by name
    with pytest.raises(ValueError, match="xml"):
        logs.formatter("xml")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of a process's output, each of which must be a JSON object (Celery's plain-text
    start-up banner is switched off with the JSON format, and warnings are log records)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_worker_and_api_lines_about_a_job_are_json_with_its_id(
    service_env: dict[str, str],
    start_api: Callable[..., ApiProcess],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given the API and a worker with the default log format
    api = start_api(service_env)
    worker = start_worker(service_env)
    # When a job is submitted, renders and is read
    answer = requests.post(f"{api.url}/v1/jobs", json={"text": "Hello.", "overrides": {"num_steps": 2}}, timeout=10)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    def finished() -> bool:
        return requests.get(f"{api.url}/v1/jobs/{job_id}", timeout=10).json()["status"] in TERMINAL_STATES

    wait_for(finished, timeout=180, what=f"job {job_id}", interval=0.2)
    # Then the worker wrote JSON lines with time, level, logger and message, and its lines about the job
    # (Celery's "succeeded" line among them) carry the job's id
    worker_lines = wait_for(
        lambda: [line for line in json_lines(worker.output()) if line.get("job_id") == job_id],
        timeout=10,
        what="a worker line about the job",
    )
    assert isinstance(worker_lines, list)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in json_lines(worker.output()))
    assert any("succeeded" in line["message"] for line in worker_lines)
    assert any(line["message"].startswith(f"starting worker {worker.name}") for line in json_lines(worker.output()))
    # And the API's access lines for that job's URL carry its id; the submission's line has none
    api_lines = json_lines(api.log.read_text(errors="replace"))
    reads = [
        line for line in api_lines if line["logger"] == "gunicorn.access" and f"/v1/jobs/{job_id}" in line["message"]
    ]
    assert reads and all(line.get("job_id") == job_id for line in reads)
    posts = [line for line in api_lines if line["logger"] == "gunicorn.access" and "POST /v1/jobs " in line["message"]]
    assert posts and all("job_id" not in line for line in posts)


def test_the_log_settings_are_checked_by_name(tmp_path: Any) -> None:
    # Given the API's environment with a log format that does not exist, then a valid text/DEBUG one
    from api.settings import ApiSettings, SettingsError

    env = {"ECHO_REDIS_URL": "redis://127.0.0.1:1/0", "ECHO_STORAGE_DIR": str(tmp_path)}
    # When the settings are read / Then the bad one is refused naming the variable, the good ones are kept
    with pytest.raises(SettingsError, match="ECHO_LOG_FORMAT"):
        ApiSettings.from_env(env | {"ECHO_LOG_FORMAT": "xml"})
    settings = ApiSettings.from_env(env | {"ECHO_LOG_FORMAT": "text", "ECHO_LOG_LEVEL": "DEBUG"})
    assert (settings.log_format, settings.log_level) == ("text", "DEBUG")
    assert ApiSettings.from_env(env).log_format == "json"
