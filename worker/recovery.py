"""Dead-worker recovery: a worker whose heartbeat has stopped gets its in-flight messages re-queued
at once, instead of after the broker's visibility timeout (an hour by default).

Each worker records what it is running in ``echo:inflight:{worker}`` (delivery tag → task, ids,
since) when a task starts and removes the entry when it ends. Every worker sweeps: at start and
every ``RECOVERY_SWEEP_S``, for every in-flight hash whose worker has no live heartbeat
(``HEARTBEAT_TTL_S`` without a beat), it hands each delivery tag to kombu's own
``restore_by_tag`` (one Redis transaction: the un-acked message goes back to the front of its
queue, and leaves the un-acked set), then drops the hash. The message is the original one, so the
re-delivery is the usual one: the runner finds a stored result and finishes without rendering, or
renders again; a book group skips what was counted and finds the rest in the cache.

A worker restarted under the same name (a container restart keeps ``echo-PID@HOST``; an operator's
fixed ``--hostname``) finds its previous life's entries under its own name, with a live heartbeat:
every entry carries the writing process's ``life`` (a random id per process), and a sweep re-queues
the entries of its own name written by another life at once, so a crashed-and-restarted worker picks
its message up within its start-up time instead of the visibility timeout. The same sweep re-queues an
entry of this very life whose task is no longer running (``ACTIVE``, in memory): a task that ended while
Redis was unreachable could neither ack its message nor remove its entry, and once Redis is back the
message is re-queued at the next sweep instead of after the visibility timeout.

The same sweep sends the messages an API never sent: a job or book is put in its store's outbox when it
is stored and taken out once its first message is on the broker, so an API process killed between the
two leaves a queued record there, which :func:`send_unsent` sends after ``OUTBOX_GRACE_S``.

A worker that was only frozen and wakes up later acks a message that is no longer un-acked: a no-op.

Jobs claimed into another job's batch (``jobs/company.py``) have no message of their own here: the claim
writes an entry ``claim:{job_id}`` in the claimer's hash, and ``restore`` (given by the Celery app)
re-sends such a job's message instead of restoring one. :func:`holds_claim` tells a worker that receives a
claimed job's own message whether its claimer is alive and answers for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from jobs.company import claim_tag
from jobs.contract import INFLIGHT_PATTERN, JobState, heartbeat_key, inflight_key, inflight_worker, sweep_lock_key

log = logging.getLogger(__name__)
RECOVERY_SWEEP_S = 10.0  # how often each worker looks for dead workers' messages
# a job stored this long ago whose message the API never reported sent is sent by a worker: longer than
# any submit takes (a reference upload to slow storage with boto3's retries), far shorter than a deadline
OUTBOX_GRACE_S = 300.0
LIFE = uuid.uuid4().hex  # this process's life: tells its in-flight entries from a predecessor's of the same name
ACTIVE: set[str] = set()  # delivery tags this process is running now (task_prerun .. task_postrun)
# held while a claim writes its entries and marks them active, so this process's own sweep never reads
# such an entry before it is in ACTIVE (it would re-send a job this process is about to render)
CLAIM_LOCK = threading.Lock()

Restore = Callable[[str], None]  # restores one un-acked message by its delivery tag


class InFlight:
    """This worker's record of the messages it is working on (what a sweeper re-queues if it dies)."""

    def __init__(self, client: Any, worker: str, *, life: str = LIFE, active: set[str] = ACTIVE) -> None:
        self.r, self.key, self.life, self.active = client, inflight_key(worker), life, active

    def started(self, delivery_tag: str, task: str, task_id: str, kwargs: dict[str, Any]) -> None:
        ids: dict[str, Any] = {k: kwargs[k] for k in ("job_id", "book_id", "voice_id") if k in kwargs}
        entry: dict[str, Any] = {"task": task, "task_id": task_id, "since": time.time(), "life": self.life, **ids}
        self.active.add(delivery_tag)  # before the entry: a sweep that reads the entry sees it active
        self.r.hset(self.key, delivery_tag, json.dumps(entry))

    def claimed(self, tags: list[str]) -> None:
        """Entries a claim wrote (``jobs/company.py``) belong to tasks this process now runs."""
        self.active.update(tags)

    def finished(self, delivery_tag: str) -> None:
        try:
            self.r.hdel(self.key, delivery_tag)
        finally:  # after the entry (or failing to remove it, Redis being down): a later sweep re-queues it
            self.active.discard(delivery_tag)


def sweep(
    client: Any, restore: Restore, *, me: str | None = None, life: str = LIFE, active: set[str] = ACTIVE
) -> list[dict[str, Any]]:
    """Re-queue the in-flight messages of every worker without a live heartbeat, and those under ``me``
    that no task of this life is running (left by an earlier life, or by a task that ended while Redis
    was unreachable); returns what was re-queued (one dict per message: worker, delivery tag, ids)."""
    requeued: list[dict[str, Any]] = []
    if me is not None:
        requeued += _reclaim_own(client, restore, me, life, active)
    for key in client.scan_iter(match=INFLIGHT_PATTERN, count=200):
        worker = inflight_worker(key)
        if worker == me or client.exists(heartbeat_key(worker)):
            continue
        # one sweeper per dead worker at a time; the restore itself is safe to repeat anyway
        lock = sweep_lock_key(worker)
        if not client.set(lock, "1", nx=True, ex=60):
            continue
        for tag, raw in client.hgetall(key).items():
            restore(tag)
            client.hdel(key, tag)
            requeued.append({"worker": worker, "delivery_tag": tag, **json.loads(raw)})
        client.delete(lock)
    for item in requeued:
        log.warning("worker %s is gone: re-queued %s %s", item["worker"], item.get("task"),
                    item.get("job_id") or item.get("book_id") or item.get("task_id"))  # fmt: skip
    return requeued


def _reclaim_own(client: Any, restore: Restore, me: str, life: str, active: set[str]) -> list[dict[str, Any]]:
    """The entries under this worker's own name that no running task holds: written by another life (a
    predecessor that died with them), or by this one for a task that ended while Redis was down (its
    ack and its entry's removal failed, so the message would wait for the visibility timeout)."""
    reclaimed: list[dict[str, Any]] = []
    key = inflight_key(me)
    with CLAIM_LOCK:
        entries = client.hgetall(key)
        running = set(active)  # read after the entries: a task started since then has no entry among them
    for tag, raw in entries.items():
        entry = json.loads(raw)
        if entry.get("life") == life and tag in running:
            continue
        restore(tag)
        client.hdel(key, tag)
        reclaimed.append({"worker": me, "delivery_tag": tag, **entry})
    return reclaimed


def holds_claim(client: Any, worker: str, job_id: str) -> bool:
    """True when ``worker`` is alive and holds the job by a claim entry (``claim:{id}``): if it dies, or its
    task ends without finishing the job, a sweep re-sends the job, so the job's own message may be
    dropped. (Only claims: a delivery's entry left behind by a task that ended while Redis was down is
    restored by tag, which does nothing once another worker has acked that message.)"""
    return bool(client.exists(heartbeat_key(worker))) and bool(client.hexists(inflight_key(worker), claim_tag(job_id)))


def send_unsent(store: Any, send: Callable[[Any], None], *, grace_s: float = OUTBOX_GRACE_S) -> list[str]:
    """Send the first message of every job or book (``store``: a JobStore or BookStore) stored more than
    ``grace_s`` ago that the API never reported sent (it died, or lost Redis, between storing the record
    and sending or reporting): one still queued is sent (``send(record)``), any other is only taken out
    of the outbox; returns the ids sent. One sweeper per store at a time; a message sent twice is
    harmless (a job's second renders it again at worst, the same file; a book's plan runs again as a
    retry would)."""
    sent: list[str] = []
    with store.outbox_sweep() as mine:
        for record_id in store.unsent(older_than_s=grace_s) if mine else []:
            record = store.get(record_id)
            if record is not None and record.status is JobState.QUEUED:
                log.warning("%s: stored over %.0f s ago and never sent; sending it now", record_id, grace_s)
                send(record)
                sent.append(record_id)
            store.sent(record_id)
    return sent


class Sweeper:
    """Sweeps at start and then every ``interval_s`` from a daemon thread: dead workers' messages, and
    ``outbox`` (called each time, e.g. :func:`send_unsent`). Redis errors are logged and the next sweep
    tries again."""

    def __init__(
        self,
        client: Any,
        restore: Restore,
        me: str,
        *,
        interval_s: float = RECOVERY_SWEEP_S,
        outbox: Callable[[], Any] | None = None,
    ) -> None:
        self.client, self.restore, self.me, self.interval_s = client, restore, me, interval_s
        self.outbox = outbox
        self._stop = threading.Event()

    def run_once(self) -> list[dict[str, Any]]:
        try:
            if self.outbox is not None:
                self.outbox()
            return sweep(self.client, self.restore, me=self.me)
        except redis.RedisError as exc:
            log.warning("dead-worker sweep skipped: %s", exc)
            return []

    def start(self) -> None:
        self.run_once()
        threading.Thread(target=self._run, name="echo-recovery", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
