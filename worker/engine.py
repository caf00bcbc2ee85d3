"""The per-process engine: the loaded pipeline, storage, the job, voice and book stores, a latents cache.

A worker in the ``assemble`` role (books' CPU work) has the same engine without a pipeline.

Built once per worker process by :func:`init_engine` from Celery's ``worker_process_init``
(never at import, never before a fork: CUDA is first touched here), then reached by tasks
through :func:`get_engine`. ``torch`` and ``echo_tts`` are imported inside :func:`load_engine`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.bookstore import BookStore
from jobs.company import WaitingRoom
from jobs.jobstore import JobStore
from jobs.storage import Storage, open_storage
from jobs.voicestore import VoiceStore
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class EngineNotReady(RuntimeError):
    """Raised when a task runs in a process whose engine was not loaded."""


class LatentsCache:
    """A few speaker latents in memory, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Engine:
    """Everything a task needs, loaded once per process."""

    settings: WorkerSettings
    pipeline: Any  # echo_tts.pipeline.Pipeline (or a test double with the same methods)
    storage: Storage
    jobs: JobStore
    device: str = "cpu"
    voices: VoiceStore = field(init=False)  # on the job store's Redis connection
    books: BookStore = field(init=False)
    waiting: WaitingRoom = field(init=False)  # jobs that may be batched together (jobs/company.py)
    latents: LatentsCache = field(default_factory=lambda: LatentsCache(8))
    busy_job: str | None = None
    worker_name: str | None = None  # this process's Celery node name, once it is ready
    # set once the worker consumes (celery_app): where this process records what it holds
    # (worker.recovery.InFlight), and how a job's message is sent again (a claimed job handed back)
    inflight: Any = None
    resend: Callable[[str], None] | None = None
    load_s: float = 0.0
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        self.voices = VoiceStore(self.jobs.r, prefix=self.jobs.prefix, clock=self.jobs.clock)
        self.books = BookStore(
            self.jobs.r, prefix=self.jobs.prefix, ttl_s=self.settings.book_ttl_s, clock=self.jobs.clock
        )
        self.waiting = WaitingRoom(self.jobs)

    @property
    def model_revision(self) -> str:
        return str(getattr(self.pipeline, "model_revision", "unknown"))

    def info(self) -> dict[str, Any]:
        """What the heartbeat announces about this process."""
        return {
            "model_revision": self.model_revision,
            "device": self.device,
            "busy_job": self.busy_job,
            "queues": list(self.settings.queues),
            "role": self.settings.role,
            "load_s": round(self.load_s, 3),
        }


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu`` (first CUDA touch: after fork)."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def warm_up(pipeline: Any) -> None:
    """One short render through every stage (text, sampler, decoder) so the first job does not pay
    for lazy initialisation (kernels, allocator). Short: 2 steps over 64 latents (~3 s of audio)."""
    from echo_tts.config import DEFAULT_PRESET, sampler_preset

    config = sampler_preset(DEFAULT_PRESET).replace(num_steps=2, sequence_length=64)
    pipeline.synthesize("Warm up.", None, config, seed=0)


def load_engine(settings: WorkerSettings) -> Engine:
    """Load the pipeline on the configured device, open storage (bucket created when missing). The
    ``assemble`` role loads no model: its engine has ``pipeline=None`` and runs on the CPU."""
    started = time.monotonic()
    storage = open_storage(settings.storage)
    storage.ensure_bucket()
    jobs = JobStore.from_url(settings.redis_url, job_ttl_s=settings.job_ttl_s)
    if settings.role == "assemble":
        log.info("engine ready without a model (role assemble)")
        return Engine(settings, None, storage, jobs, load_s=time.monotonic() - started)
    from echo_tts.pipeline import Pipeline

    device = resolve_device(settings.device)
    pipeline = Pipeline.from_pretrained(
        settings.model_repo,
        settings.ae_repo,
        device=device,
        dtype=settings.dtype,
        ae_dtype=settings.ae_dtype,
        token=settings.hf_token,
        canvas=settings.canvas,
        max_latents=settings.max_latents,
    )
    engine = Engine(
        settings,
        pipeline,
        storage,
        jobs,
        device=device,
        latents=LatentsCache(settings.latents_cache_size),
        load_s=time.monotonic() - started,
    )
    if settings.warmup:
        begun = time.monotonic()
        warm_up(pipeline)
        engine.warmup_s = time.monotonic() - begun
    log.info(
        "engine ready: device=%s revision=%s load %.1fs warm-up %.1fs",
        device,
        engine.model_revision,
        engine.load_s,
        engine.warmup_s,
    )
    return engine


_engine: Engine | None = None


def init_engine(settings: WorkerSettings) -> Engine:
    """Load and install this process's engine (called from ``worker_process_init``)."""
    global _engine
    _engine = load_engine(settings)
    return _engine


def set_engine(engine: Engine | None) -> None:
    """Install an engine built elsewhere (tests)."""
    global _engine
    _engine = engine


def get_engine() -> Engine:
    """The engine of this process; :class:`EngineNotReady` before ``init_engine``."""
    if _engine is None:
        raise EngineNotReady("the engine is not loaded in this process (worker_process_init did not run)")
    return _engine
