"""The torch-free job layer that the API and the workers share.

The contract (task and queue names, states, the request, storage and Redis key layouts, error
codes), the job and voice stores in Redis, object storage (S3 or a local directory) and the
settings both sides parse. ``api/`` imports this package and never ``worker/``; ``worker/``
imports it and ``echo_tts``; nothing here imports torch, Celery workers or Flask.
"""
