"""The worker's settings, read once at start from the environment (the worker's only env reader).

Built with the shared helpers of :mod:`jobs.settings`; a missing or malformed setting raises
:class:`~jobs.settings.SettingsError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from echo_tts.config import DEFAULT_AE_REPO, DEFAULT_MODEL_REPO, DEFAULT_PAUSE_S
from jobs.contract import QUEUE_ASSEMBLY, QUEUE_WEBHOOKS, QUEUES
from jobs.logs import FORMATS as LOG_FORMATS
from jobs.logs import LEVELS as LOG_LEVELS
from jobs.settings import (
    DEFAULT_BOOK_TTL_S,
    DEFAULT_JOB_TTL_S,
    SettingsError,
    StorageSettings,
    WebhookSettings,
    boolean,
    bounded_int,
    choice,
    environ,
    get,
    parsed,
    positive,
    positive_int,
    read_book_ttl_s,
    read_job_ttl_s,
    read_redis_url,
)

__all__ = ["MAX_PIECE_BYTES", "SettingsError", "WorkerSettings"]

DTYPES = ("float32", "bfloat16")  # what echo_tts.dtypes.as_dtype takes
DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")
# "render": loads the model, renders jobs and book segment groups (the GPU worker). "assemble": no model,
# plans books and assembles chapters and the M4B on the CPU (its own queue, never the GPU's time).
ROLES = ("render", "assemble")
CANVASES = ("fixed", "auto")  # echo_tts.canvas: the upstream 640-latent canvas, or fitted to each text
# Both roles deliver webhooks by default (a render worker takes a delivery only between renders), so a
# single worker delivers; ECHO_WORKER_QUEUES without tts-webhooks leaves them to the others.
DEFAULT_QUEUES = {"render": (*QUEUES, QUEUE_WEBHOOKS), "assemble": (QUEUE_ASSEMBLY, QUEUE_WEBHOOKS)}
MAX_PIECE_BYTES = 762  # one generation: 768 tokens - BOS - "[S1] " (echo_tts.text.DEFAULT_SPLIT_BYTES)


def _queues(raw: str) -> tuple[str, ...]:
    names = tuple(q.strip() for q in raw.split(",") if q.strip())
    if not names:
        raise ValueError(raw)
    return names


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs, read once at start by ``from_env``.

    Celery's own time limits only work on the prefork pool; our workers run ``--pool=solo``,
    so the render loop also enforces ``time_limit_s`` itself between diffusion steps.
    """

    redis_url: str
    storage: StorageSettings
    role: str = "render"
    model_repo: str = DEFAULT_MODEL_REPO
    ae_repo: str = DEFAULT_AE_REPO
    device: str = "auto"
    dtype: str = "bfloat16"
    ae_dtype: str = "float32"
    hf_token: str | None = None
    queues: tuple[str, ...] = DEFAULT_QUEUES["render"]
    soft_time_limit_s: float = 600.0
    time_limit_s: float = 660.0
    visibility_timeout_s: float = 3600.0
    job_ttl_s: int = DEFAULT_JOB_TTL_S
    batch_size: int = 4
    canvas: str = "fixed"
    # the longest canvas a render samples (ECHO_MAX_LATENTS; 640 = 29.7 s, upstream's). The 8 GB profile:
    # 576 (26.7 s, still longer than a 300-byte piece speaks) with ECHO_AE_DTYPE=bfloat16 (docs/performance.md)
    max_latents: int = 640
    # Long text is split into pieces of at most this many UTF-8 bytes. The model fits whatever text
    # it gets into one ~30 s generation (longer text is spoken faster), so a piece should hold
    # ~20 s of speech: 300 bytes is ~20 s of English at ~15 characters/s. The ceiling is the
    # token limit: 768 tokens - BOS - the 5-byte "[S1] " prefix = 762 bytes.
    max_piece_bytes: int = 300
    segment_pause_s: float = DEFAULT_PAUSE_S
    latents_cache_size: int = 8
    warmup: bool = True
    storage_retries: int = 5
    book_group_size: int = 4  # book segments rendered as one batched sampler call
    # cross-job batching (worker/job_batch.py): a short interactive job takes waiting jobs with the same
    # sampler settings into its sampler call, up to batch_size pieces, waiting at most this long for them.
    # None (auto): on CUDA only. A CPU is compute-bound at batch 1 already: there a batch of 4 costs about
    # 4.3 single renders (tiny checkpoint, 2 cores), so batching would only delay the first jobs.
    job_batching: bool | None = None
    batch_window_ms: int = 50
    outbox_grace_s: float = 300.0  # a job stored this long ago and never sent by its API is sent by a worker
    book_ttl_s: int = DEFAULT_BOOK_TTL_S
    log_format: str = "json"  # ECHO_LOG_FORMAT: json (one object per line) or text
    log_level: str = "INFO"  # ECHO_LOG_LEVEL (--loglevel wins)
    restore_interval_s: float = 10.0  # how often a worker re-queues deliveries older than the visibility timeout
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)  # secret, retries, timeouts

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, role: str | None = None) -> WorkerSettings:
        """Read every setting; ``role`` (from ``--role``) wins over ECHO_WORKER_ROLE."""
        e = environ(env)
        soft = positive(e, "ECHO_TASK_SOFT_TIME_LIMIT_S", 600.0)
        hard = positive(e, "ECHO_TASK_TIME_LIMIT_S", max(660.0, soft + 30))
        if hard <= soft:
            raise SettingsError(f"ECHO_TASK_TIME_LIMIT_S={hard} must exceed ECHO_TASK_SOFT_TIME_LIMIT_S={soft}")
        visibility = positive(e, "ECHO_VISIBILITY_TIMEOUT_S", max(3600.0, hard * 2))
        if visibility <= hard:
            raise SettingsError(f"ECHO_VISIBILITY_TIMEOUT_S={visibility} must exceed ECHO_TASK_TIME_LIMIT_S={hard}")
        device = get(e, "ECHO_DEVICE", "auto") or "auto"
        if not device.startswith(DEVICE_PREFIXES):
            raise SettingsError(f"ECHO_DEVICE={device!r} must be auto, cpu, cuda, cuda:N or mps")
        role = choice({**e, "ECHO_WORKER_ROLE": role} if role else e, "ECHO_WORKER_ROLE", "render", ROLES)
        queues = parsed(e, "ECHO_WORKER_QUEUES", DEFAULT_QUEUES[role], _queues, "a comma-separated list of queue names")
        if role == "assemble" and set(queues) & set(QUEUES):
            raise SettingsError(
                f"ECHO_WORKER_QUEUES={','.join(queues)} includes a rendering queue, but the assemble role loads no "
                f"model: give it {QUEUE_ASSEMBLY} only"
            )
        return cls(
            role=role,
            redis_url=read_redis_url(e),
            storage=StorageSettings.from_env(e),
            model_repo=get(e, "ECHO_MODEL_REPO", cls.model_repo) or cls.model_repo,
            ae_repo=get(e, "ECHO_AE_REPO", cls.ae_repo) or cls.ae_repo,
            device=device,
            dtype=choice(e, "ECHO_DTYPE", "bfloat16", DTYPES),
            ae_dtype=choice(e, "ECHO_AE_DTYPE", "float32", DTYPES),
            hf_token=get(e, "HF_TOKEN"),
            queues=queues,
            soft_time_limit_s=soft,
            time_limit_s=hard,
            visibility_timeout_s=visibility,
            job_ttl_s=read_job_ttl_s(e),
            batch_size=positive_int(e, "ECHO_BATCH_SIZE", 4),
            canvas=choice(e, "ECHO_CANVAS", "fixed", CANVASES),
            max_latents=bounded_int(e, "ECHO_MAX_LATENTS", 640, low=64, high=640),
            max_piece_bytes=bounded_int(e, "ECHO_MAX_PIECE_BYTES", 300, low=32, high=MAX_PIECE_BYTES),
            segment_pause_s=parsed(e, "ECHO_SEGMENT_PAUSE_S", DEFAULT_PAUSE_S, float, "a number"),
            latents_cache_size=positive_int(e, "ECHO_LATENTS_CACHE_SIZE", 8),
            warmup=boolean(e, "ECHO_WARMUP", True),
            storage_retries=positive_int(e, "ECHO_STORAGE_RETRIES", 5),
            book_group_size=bounded_int(e, "ECHO_BOOK_GROUP_SIZE", 4, low=1, high=64),
            job_batching=None
            if (e.get("ECHO_JOB_BATCHING") or "auto").lower() == "auto"
            else boolean(e, "ECHO_JOB_BATCHING", True),
            batch_window_ms=bounded_int(e, "ECHO_BATCH_WINDOW_MS", 50, low=0, high=2000),
            outbox_grace_s=positive(e, "ECHO_OUTBOX_GRACE_S", 300.0),
            book_ttl_s=read_book_ttl_s(e),
            restore_interval_s=positive(e, "ECHO_UNACKED_RESTORE_INTERVAL_S", 10.0),
            log_format=choice(e, "ECHO_LOG_FORMAT", "json", LOG_FORMATS),
            log_level=choice(e, "ECHO_LOG_LEVEL", "INFO", LOG_LEVELS),
            webhooks=WebhookSettings.from_env(e),
        )
