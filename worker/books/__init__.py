"""Audiobooks on the workers: plan a book into segments (CPU), render segment groups as batches
(GPU), assemble chapters and the M4B (CPU). Functions take the engine and a ``send`` callable (the
Celery app's ``send_task`` in production), so they run without Celery in tests.

Every step is safe to repeat: a segment counts once (the book store), a cached segment is never
rendered again, an assembled chapter or a finished book is left alone. After each step the flow
looks at what became ready and queues it (:mod:`worker.books.flow`), so a crash between two steps
is mended by the next delivery or a retry.
"""
