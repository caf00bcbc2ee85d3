"""Cross-job batching: a worker that starts a short interactive job takes other waiting jobs with the same
sampler settings into the same sampler call, so a GPU renders several users' sentences at the price of
about one (issue 10, item 3).

A job leads a batch when it is not streamed, plans to fewer pieces than ``ECHO_BATCH_SIZE`` and has nothing
spooled from an earlier delivery. It claims waiting jobs (``jobs/company.py``: oldest first, one piece each,
at most the free places) and, while places are free, tries again for at most ``ECHO_BATCH_WINDOW_MS``: a
lone job waits no longer than that for company. Texts, voices, seeds and output formats may differ; each
job gets the track it would get alone (``worker.render.render_many``), its own file, record and webhooks.

Nothing is acknowledged before it is stored: a claimed job's own message stays queued and is acked only
by whoever receives it once the job is final, or dropped while its claimer lives and holds it in its
in-flight hash (the claim wrote that entry). If the claimer dies, the dead-worker sweep re-sends the
claimed jobs' messages; a claimed job that cannot be stored now (storage down) is handed back the same
way. A batch the model refuses (input it rejects, memory it lacks) renders each job alone, so the error
lands on the job that caused it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from echo_tts.errors import InvalidInput
from jobs.company import claim_tag
from jobs.contract import ContractError, ErrorCode, JobState, SynthesisRequest
from jobs.storage import TransientStorageError

from . import webhook_tasks
from .engine import Engine
from .job_output import (
    Described,
    ProgressWriter,
    fail,
    fail_unexpected,
    free_after_out_of_memory,
    is_out_of_memory,
    outcome,
    settle,
    spool,
    spooled,
)
from .recovery import CLAIM_LOCK, LIFE
from .render import (
    JobToRender,
    ProgressReport,
    RenderCancelled,
    RenderControl,
    RenderTimeLimit,
    first_canvas,
    plan_pieces,
    render_many,
    sampler_config,
)
from .voices import JobFailure, resolve_speaker

log = logging.getLogger(__name__)
POLL_S = 0.01  # how often a lead with free places looks for company inside its window
Outcome = dict[str, Any]
HANDED_BACK = "handed_back"  # a claimed job sent back to the queue (storage down): not final


def _lead_pieces(engine: Engine, lead: SynthesisRequest) -> int | None:
    """How many pieces the job renders when it may lead a batch; None when it renders alone."""
    s = engine.settings
    enabled = engine.device.startswith("cuda") if s.job_batching is None else s.job_batching
    if not enabled or lead.stream or engine.inflight is None or engine.resend is None:
        return None
    if not engine.worker_name or spooled(lead.job_id) is not None:
        return None
    count = len(plan_pieces(lead.text, s.max_piece_bytes))
    return count if 0 < count < s.batch_size else None


def gather_company(engine: Engine, lead: SynthesisRequest) -> list[SynthesisRequest]:
    """Claim waiting jobs that can share the lead's sampler call (possibly none)."""
    pieces = _lead_pieces(engine, lead)
    if pieces is None:
        return []
    free = engine.settings.batch_size - pieces
    window_ends = time.monotonic() + engine.settings.batch_window_ms / 1000
    claimed: list[str] = []
    sizes = company_sizes(engine, lead)
    try:
        while True:
            claimed += _claim(engine, lead, free - len(claimed), sizes)
            left = window_ends - time.monotonic()
            if len(claimed) >= free or left <= 0:
                break
            time.sleep(min(POLL_S, left))
        company = [request for request in (_companion(engine, job_id) for job_id in claimed) if request]
    except Exception:  # Redis failing mid-way: what was claimed goes back (or to this process's next sweep)
        for job_id in claimed:
            with contextlib.suppress(Exception):
                _hand_back(engine, job_id)
        raise
    if company:
        log.info("job %s: rendering together with %s", lead.job_id, ", ".join(r.job_id for r in company))
    return company


def company_sizes(engine: Engine, lead: SynthesisRequest) -> tuple[int, int]:
    """The text sizes (UTF-8 bytes) company may have: one piece, and with fitted canvases
    (``ECHO_CANVAS=auto``) the sizes whose first canvas is the lead's first piece's, since a sampler call
    renders each canvas length apart (measured on raw bytes, a close stand-in for the spoken bytes)."""
    top, config = engine.settings.max_piece_bytes, sampler_config(lead)
    want = first_canvas(engine.pipeline, plan_pieces(lead.text, top)[0], config)
    if want is None:
        return 0, top
    sizes = [size for size in range(1, top + 1) if first_canvas(engine.pipeline, "x" * size, config) == want]
    return (min(sizes), max(sizes)) if sizes else (0, top)


def _claim(engine: Engine, lead: SynthesisRequest, places: int, sizes: tuple[int, int]) -> list[str]:
    low, high = sizes
    with CLAIM_LOCK:  # the claim's entries are marked as this process's before its own sweep can read them
        claimed = engine.waiting.claim(
            lead.job_id,
            lead.to_dict(),
            limit=places,
            min_text_bytes=low,
            max_text_bytes=high,
            worker=str(engine.worker_name),
            life=LIFE,
        )
        engine.inflight.claimed([claim_tag(job_id) for job_id in claimed])
    return claimed


def _companion(engine: Engine, job_id: str) -> SynthesisRequest | None:
    """The claimed job's request; a record that breaks the contract fails here and is let go."""
    record = engine.jobs.get(job_id)
    try:
        request = SynthesisRequest.from_dict(record.request if record else {})
    except ContractError as exc:
        engine.jobs.fail(job_id, ErrorCode.INVALID_INPUT, str(exc))
        _let_go(engine, job_id)
        return None
    webhook_tasks.notify(engine, "job", job_id)  # started
    return request


def _let_go(engine: Engine, job_id: str) -> None:
    """The claimed job is final: drop its in-flight entry and send its completed webhook."""
    engine.inflight.finished(claim_tag(job_id))
    webhook_tasks.notify(engine, "job", job_id)


def _hand_back(engine: Engine, job_id: str) -> None:
    """The claimed job could not be finished here: send its message again (its claim is released by the
    delivery that receives it), then drop the entry; if even the resend fails, the entry stays and this
    process's sweep re-sends it once Redis answers."""
    log.warning("job %s: handed back to the queue", job_id)
    try:
        if engine.resend is not None:
            engine.resend(job_id)
        engine.inflight.finished(claim_tag(job_id))
    except Exception:
        engine.inflight.active.discard(claim_tag(job_id))
        raise


def run_together(
    engine: Engine,
    lead: SynthesisRequest,
    company: list[SynthesisRequest],
    *,
    alone: Callable[[SynthesisRequest], Described],
) -> Outcome:
    """Render the lead and its company in shared sampler calls and settle every job; returns the lead's
    outcome. ``alone`` renders one job by itself (the fallback when the batch is refused). Raises what
    the lead's task handles (a storage outage, an unexpected error); the company is settled or handed
    back before that."""
    outcomes: dict[str, Outcome] = {}  # jobs settled (final), and those handed back (status handed_back)
    try:
        todo: list[JobToRender] = []
        for request in [lead, *company]:
            try:
                todo.append(JobToRender(request, resolve_speaker(engine, request)))
            except JobFailure as exc:
                outcomes[request.job_id] = fail(engine, request.job_id, exc.code, exc.message)
        if todo:
            _render(engine, lead, todo, outcomes, alone)
    finally:
        for request in company:
            if request.job_id not in outcomes:
                _hand_back(engine, request.job_id)
            elif outcomes[request.job_id]["status"] != HANDED_BACK:
                _let_go(engine, request.job_id)
    return outcomes[lead.job_id]


def _render(
    engine: Engine,
    lead: SynthesisRequest,
    todo: list[JobToRender],
    outcomes: dict[str, Outcome],
    alone: Callable[[SynthesisRequest], Described],
) -> None:
    started = time.monotonic()
    writers = [ProgressWriter(engine, job.request.job_id) for job in todo]
    counts = [len(plan_pieces(job.request.text, engine.settings.max_piece_bytes)) for job in todo]

    def progress(report: ProgressReport) -> None:  # each record sees the batch's steps, its own pieces
        final = report.segments_done == report.segments_total
        for writer, pieces in zip(writers, counts, strict=True):
            writer(ProgressReport(report.fraction, report.step, report.total_steps, pieces if final else 0, pieces))

    control = RenderControl(
        cancel_requested=lambda: all(engine.jobs.is_cancel_requested(job.request.job_id) for job in todo),
        on_progress=progress,
        deadline=started + engine.settings.soft_time_limit_s,
    )
    try:
        tracks = render_many(
            engine.pipeline,
            todo,
            batch_size=engine.settings.batch_size,
            pause_s=engine.settings.segment_pause_s,
            control=control,
            max_piece_bytes=engine.settings.max_piece_bytes,
        )
    except (RenderCancelled, RenderTimeLimit) as exc:
        for job in todo:
            outcomes[job.request.job_id] = settle(engine, job.request, _raise(exc))
        return
    except Exception as exc:
        if not (is_out_of_memory(exc) or isinstance(exc, InvalidInput)):
            for job in todo:
                if job.request.job_id != lead.job_id:
                    fail_unexpected(engine, job.request.job_id, exc)
                    outcomes[job.request.job_id] = outcome(job.request.job_id, JobState.FAILED)
            raise
        detail = free_after_out_of_memory(exc) if is_out_of_memory(exc) else str(exc)
        log.warning("the batch led by %s was refused (%s): each job renders alone", lead.job_id, detail)
        _settle_each(engine, lead, todo, outcomes, lambda job: alone(job.request))
        return
    timings = {"model_s": round(time.monotonic() - started, 4), "batch_jobs": len(todo)}
    rendered = dict(zip((job.request.job_id for job in todo), tracks, strict=True))
    _settle_each(engine, lead, todo, outcomes, lambda job: spool(job.request, rendered[job.request.job_id], timings))


def _settle_each(
    engine: Engine,
    lead: SynthesisRequest,
    todo: list[JobToRender],
    outcomes: dict[str, Outcome],
    produce: Callable[[JobToRender], Described],
) -> None:
    """Companions first (one whose storage is down is handed back), the lead last: its storage error
    propagates to its task, which retries it."""
    for job in sorted(todo, key=lambda job: job.request.job_id == lead.job_id):
        job_id = job.request.job_id
        try:
            outcomes[job_id] = settle(engine, job.request, partial(produce, job))
        except TransientStorageError:
            if job_id == lead.job_id:
                raise
            _hand_back(engine, job_id)
            outcomes[job_id] = outcome(job_id, HANDED_BACK)


def _raise(exc: Exception) -> Callable[[], Described]:
    def produce() -> Described:
        raise exc

    return produce
