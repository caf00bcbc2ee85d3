"""Live progress over real HTTP (``python -m api``, real Redis, S3 on moto, no worker): the test moves the
records with JobStore/BookStore the way a worker does while an SSE client reads the stream."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from api_helpers import API_KEYS, ApiServer

from api.routes_events import DEFAULT_STREAMS, State, event, events
from jobs.bookstore import BookStore
from jobs.errors import ErrorCode
from jobs.jobstore import JobStore

pytest_plugins = ["api_fixtures"]

CLOSED = {"event": "closed"}


class SSE:
    """A server-sent-events client on a thread (http.client, so that ``close`` can shut the socket under
    a blocked read): ``next()`` is the next event as ``{"id", "event", "data"}``, ``CLOSED`` once the
    stream ended. ``status``, ``headers`` and ``json()`` describe the answer."""

    def __init__(self, api: ApiServer, path: str, *, as_: str = "alice", last_id: str | None = None) -> None:
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {API_KEYS[as_]}"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        host, port = api.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.request("GET", path, headers=headers)
        self.answer = self.conn.getresponse()
        self.status, self.headers = self.answer.status, self.answer.headers
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.retry: str | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self.reader.start()

    def json(self) -> Any:
        return json.loads(self.answer.read())

    def _read(self) -> None:
        buffer = ""
        try:
            while chunk := self.answer.read1(65536):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._block(block)
        except (OSError, ValueError, http.client.HTTPException):  # closed by the test
            pass
        self.queue.put(CLOSED)

    def _block(self, block: str) -> None:
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "retry":
                self.retry = value
            else:
                fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            self.queue.put(fields)

    def next(self, timeout: float = 10) -> dict[str, Any]:
        return self.queue.get(timeout=timeout)

    def nothing_for(self, seconds: float) -> bool:
        try:
            self.queue.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end
        if self.reader.is_alive():
            self.reader.join(timeout=5)
        self.conn.close()


def new_job(api: ApiServer) -> str:
    answer = api.call("POST", "/v1/jobs", json={"text": "Hello there."})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_job_events_follow_the_record_in_order_and_end_with_done(api: ApiServer, api_redis_url: str) -> None:
    # Given a queued job of alice's, and alice watching it
    store = JobStore.from_url(api_redis_url)
    job_id = new_job(api)
    stream = SSE(api, f"/v1/jobs/{job_id}/events")
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["Cache-Control"] == "no-cache"
    assert stream.headers["X-Accel-Buffering"] == "no"
    first = stream.next()
    assert first["event"] == "progress" and first["data"]["status"] == "queued" and first["data"]["id"] == job_id
    # When a worker starts it, reports progress twice and succeeds
    seen = [first]
    assert store.mark_running(job_id, worker="w1")
    seen.append(stream.next())
    store.update_progress(job_id, fraction=0.25, step=2, total_steps=8, segments_done=0, segments_total=1)
    seen.append(stream.next())
    store.update_progress(job_id, fraction=0.75, step=6, total_steps=8, segments_done=0, segments_total=1)
    seen.append(stream.next())
    store.succeed(job_id, {"key": f"jobs/{job_id}/audio.wav", "duration_s": 1.5, "sample_rate": 44100, "bytes": 9})
    seen.append(stream.next())
    # Then each change arrived once, in order, with the same JSON as GET, and done closed the stream
    assert [e["event"] for e in seen] == ["progress"] * 4 + ["done"]
    assert [e["data"]["status"] for e in seen] == ["queued", "running", "running", "running", "succeeded"]
    assert [e["data"]["progress"]["step"] for e in seen[2:4]] == [2, 6]
    assert len({e["id"] for e in seen}) == 5 and stream.retry == "2000"
    assert seen[-1]["data"]["result"]["url"] and seen[-1]["data"]["result"]["duration_s"] == 1.5
    assert set(seen[-1]["data"]) == set(api.call("GET", f"/v1/jobs/{job_id}").json())
    assert stream.next() == CLOSED


def test_a_reconnect_with_last_event_id_gets_only_later_events(api: ApiServer, api_redis_url: str) -> None:
    # Given alice saw her job start running, then lost the connection
    store = JobStore.from_url(api_redis_url)
    job_id = new_job(api)
    stream = SSE(api, f"/v1/jobs/{job_id}/events")
    queued = stream.next()
    store.mark_running(job_id)
    running = stream.next()
    stream.close()
    # When she reconnects with the last id she got
    again = SSE(api, f"/v1/jobs/{job_id}/events", last_id=running["id"])
    # Then the state she saw is not sent again; the next change is
    assert again.nothing_for(1.0)
    store.update_progress(job_id, fraction=0.5, step=4, total_steps=8, segments_done=0, segments_total=1)
    later = again.next()
    assert later["event"] == "progress" and later["data"]["progress"]["fraction"] == 0.5
    again.close()
    # and a reconnect with an older id gets the current state at once
    old = SSE(api, f"/v1/jobs/{job_id}/events", last_id=queued["id"])
    assert old.next()["id"] == later["id"]
    old.close()
    # and once the job finished, a reconnect with any id gets the done event, then the end
    store.fail(job_id, "render_failed", "boom")
    done = SSE(api, f"/v1/jobs/{job_id}/events", last_id=later["id"]).next()
    assert done["event"] == "done" and done["data"]["error"]["code"] == "render_failed"
    after = SSE(api, f"/v1/jobs/{job_id}/events", last_id=done["id"])
    assert after.next() == done and after.next() == CLOSED


def test_another_keys_job_or_an_unknown_id_is_404_and_no_key_401(api: ApiServer) -> None:
    job_id = new_job(api)
    for as_, path in (("bob", f"/v1/jobs/{job_id}/events"), ("alice", "/v1/jobs/job_nope/events")):
        answer = SSE(api, path, as_=as_)
        assert answer.status == 404 and answer.json()["error"]["code"] == "not_found"
    assert SSE(api, "/v1/audiobooks/book_nope/events").status == 404
    assert api.call("GET", f"/v1/jobs/{job_id}/events", as_=None).status_code == 401


def test_book_events_follow_planning_segments_and_the_end(api: ApiServer, api_redis_url: str) -> None:
    # Given a book of alice's (one chapter) and alice watching it
    books = BookStore.from_url(api_redis_url)
    answer = api.call("POST", "/v1/audiobooks", json={"chapters": [{"title": "A", "text": "Hi."}]})
    assert answer.status_code == 202, answer.text
    book_id = answer.json()["id"]
    stream = SSE(api, f"/v1/audiobooks/{book_id}/events")
    assert stream.next()["data"]["status"] == "queued"
    # When it is planned into two segments, one is done, then it fails
    books.mark_planned(book_id, [{"index": 0, "title": "A", "segments_total": 2}], 2)
    planned = stream.next()
    books.segment_done(book_id, 0, 0, "d" * 64, cached=False, render_s=0.2)
    one = stream.next()
    books.fail(book_id, ErrorCode.RENDER_FAILED, "boom")
    done = stream.next()
    # Then each step arrived as the book's GET JSON, and the stream ended with done
    assert planned["data"]["status"] == "running" and planned["data"]["segments_total"] == 2
    assert one["data"]["segments_done"] == 1 and one["data"]["chapters"][0]["segments_done"] == 1
    assert done["event"] == "done" and done["data"]["status"] == "failed" and stream.next() == CLOSED
    # and bob cannot watch it
    assert SSE(api, f"/v1/audiobooks/{book_id}/events", as_="bob").status == 404


def test_one_process_holds_its_stream_slots_at_once_and_refuses_one_more(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], api_redis_url: str
) -> None:
    # Given an API process of its own (one gunicorn worker, the default --streams) and a queued job
    server = launch_api(api_env)
    store = JobStore.from_url(api_redis_url)
    job_id = new_job(server)
    path = f"/v1/jobs/{job_id}/events"
    # When alice opens every slot at once
    streams = [SSE(server, path) for _ in range(DEFAULT_STREAMS)]
    # Then each stream gets the job's state, one more stream is 503 with Retry-After, and GET still answers
    assert all(s.status == 200 for s in streams)
    assert all(s.next()["data"]["status"] == "queued" for s in streams)
    extra = SSE(server, path)
    assert extra.status == 503 and extra.headers["Retry-After"] and "--streams" in extra.json()["error"]["message"]
    started = time.monotonic()
    assert server.call("GET", f"/v1/jobs/{job_id}").status_code == 200
    get_s = time.monotonic() - started
    # and a change reaches every stream
    started = time.monotonic()
    store.mark_running(job_id)
    assert all(s.next()["data"]["status"] == "running" for s in streams)
    fan_out_s = time.monotonic() - started
    store.succeed(job_id, {"key": f"jobs/{job_id}/audio.wav", "duration_s": 1.0, "sample_rate": 44100, "bytes": 9})
    assert all(s.next()["event"] == "done" and s.next() == CLOSED for s in streams)
    # and the slots come back once the streams ended
    again = SSE(server, path)
    assert again.status == 200 and again.next()["event"] == "done"
    print(f"\n{DEFAULT_STREAMS} streams open: GET in {get_s * 1000:.0f} ms; all got a change in {fan_out_s:.2f} s")


def test_the_stream_heartbeats_while_idle_and_ends_after_its_maximum_duration() -> None:
    # Given a record that never changes, and a clock that moves 5 s a poll
    now = [0.0]
    state = State("queued.0", False, lambda: {"status": "queued"})

    def sleep(seconds: float) -> None:
        now[0] += 5

    # When it is watched for at most 60 s
    out = list(events(lambda: state, None, heartbeat_s=15, max_s=60, clock=lambda: now[0], sleep=sleep))
    # Then one event, a keep-alive comment every 15 s, and the end
    assert out[0] == "retry: 2000\n\n" and out[1] == event("progress", {"status": "queued"}, "queued.0")
    assert out[2:] == [": keep-alive\n\n"] * 4


def test_the_openapi_document_describes_the_streams(api: ApiServer) -> None:
    paths = api.call("GET", "/v1/openapi.json", as_=None).json()["paths"]
    for path in ("/v1/jobs/{id}/events", "/v1/audiobooks/{id}/events"):
        assert "text/event-stream" in paths[path]["get"]["responses"]["200"]["content"]
