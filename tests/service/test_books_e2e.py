"""Audiobooks end to end over real HTTP: the API, a rendering worker and an assembling worker (real
``python -m worker`` processes on the tiny checkpoint), a real Redis and an S3 server on loopback.

Fault model (what survives what):
- the book's record and completion counters live in Redis, its files and every rendered segment in
  S3 (``cache/segments/{digest}.flac``): all outlive any worker process;
- a segment group's message is acked after the task ends, so a rendering worker killed mid-group
  leaves it un-acked; after the visibility timeout another worker gets it, skips the segments already
  counted and finds the ones stored but not counted in the cache; only the killed batch is lost;
- a book submitted again, or edited, renders only the segments whose digest is not in the cache.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests
from book_files import lighthouse_epub3
from fault_helpers import finish_book, finish_job, get_book
from service_helpers import ApiProcess, wait_for

from worker.assembly import read_chapters

pytestmark = pytest.mark.slow
FAST = '{"num_steps": 2}'
FAST_JSON = {"num_steps": 2}


@pytest.fixture
def book_env(service_env: dict[str, str]) -> dict[str, str]:
    # small pieces: several segments per chapter even for short test books
    return service_env | {"ECHO_MAX_PIECE_BYTES": "80", "ECHO_BOOK_GROUP_SIZE": "2"}


@pytest.fixture
def stack(book_env: dict[str, str], start_api: Any, start_worker: Any) -> ApiProcess:
    """The API, one rendering worker and one assembling worker."""
    api = start_api(book_env)
    start_worker(book_env)
    start_worker(book_env | {"ECHO_WORKER_ROLE": "assemble"})
    return api


def post_file(api: ApiProcess, data: bytes, name: str, **form: str) -> dict[str, Any]:
    answer = requests.post(
        f"{api.url}/v1/audiobooks",
        files={"file": (name, data)},
        data={"seed": "5", "overrides": FAST, **form},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def post_json(api: ApiProcess, chapters: list[tuple[str, str]], **options: Any) -> dict[str, Any]:
    body = {
        "title": "Notes",
        "author": "Tester",
        "seed": 5,
        "overrides": FAST_JSON,
        "chapters": [{"title": t, "text": x} for t, x in chapters],
        **options,
    }
    answer = requests.post(f"{api.url}/v1/audiobooks", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def m4b_of(book: dict[str, Any]) -> Any:
    answer = requests.get(book["result"]["m4b_url"], timeout=30)
    assert answer.status_code == 200
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.m4b"
        path.write_bytes(answer.content)
        return read_chapters(path)


def test_an_epub_becomes_chapter_files_and_an_m4b_with_its_chapter_markers(stack: ApiProcess) -> None:
    # Given an EPUB of three chapters with a table of contents, a cover and a navigation page
    book = post_file(stack, lighthouse_epub3(), "lighthouse.epub", format="mp3")
    # When it has rendered
    done = finish_book(stack.url, book["id"])
    # Then it succeeded, every segment rendered once, and each chapter has its file
    assert done["status"] == "succeeded", done["error"]
    assert done["segments_total"] > 3 and done["segments_rendered"] == done["segments_total"]
    titles = ["The Storm Begins", "Into the Dark", "Morning"]
    assert [c["title"] for c in done["chapters"]] == titles
    assert all(c["status"] == "assembled" and c["duration_s"] > 0 for c in done["chapters"])
    for chapter in done["chapters"]:
        answer = requests.get(chapter["url"], timeout=30)
        assert answer.status_code == 200 and answer.content[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
    # And the M4B has three markers with those titles at the chapters' offsets, its duration their sum
    m4b = m4b_of(done)
    assert [title for title, _, _ in m4b.chapters] == titles
    starts, position = [], 0.0
    for chapter in done["chapters"]:
        starts.append(position)
        position += chapter["duration_s"]
    for (_, start_s, _), expected in zip(m4b.chapters, starts, strict=True):
        assert abs(start_s - expected) < 0.03
    assert m4b.duration_s == pytest.approx(position, rel=0.01)
    assert done["result"]["duration_s"] == pytest.approx(position, rel=0.01) and done["audio_s"] > 0
    assert m4b.metadata.get("title") == "The Lighthouse Keeper"


def test_markdown_and_text_books_get_their_chapters_and_titles(stack: ApiProcess) -> None:
    # Given a Markdown book and a plain-text book
    markdown = b"# A Small Book\n\n## The Start\n\nIt began.\n\n## The End\n\nIt ended well.\n"
    text = b"CHAPTER I\n\nThe first words.\n\nCHAPTER II\n\nThe last words.\n"
    md, txt = post_file(stack, markdown, "small.md", format="flac"), post_file(stack, text, "plain.txt")
    # When both have rendered
    md_done, txt_done = finish_book(stack.url, md["id"]), finish_book(stack.url, txt["id"])
    # Then each has its chapters, titled from the headings, in its M4B too
    assert md_done["status"] == txt_done["status"] == "succeeded"
    assert md_done["title"] == "A Small Book"
    assert [c["title"] for c in md_done["chapters"]] == ["The Start", "The End"]
    assert [t for t, _, _ in m4b_of(md_done).chapters] == ["The Start", "The End"]
    assert len(txt_done["chapters"]) == 2 and txt_done["chapters"][0]["title"].upper().startswith("CHAPTER")
    assert len(m4b_of(txt_done).chapters) == 2


def test_a_book_sent_again_renders_nothing_and_an_edit_renders_only_what_changed(stack: ApiProcess) -> None:
    # Given a book of three chapters that has rendered
    chapters = [
        ("One", "The first chapter.\n\nIt has two paragraphs."),
        ("Two", "A middle.\n\nStill the middle."),
        ("Three", "The end is near.\n\nThe end."),
    ]
    first = finish_book(stack.url, post_json(stack, chapters)["id"])
    assert first["status"] == "succeeded" and first["segments_rendered"] == first["segments_total"]
    # When the same book is submitted again
    again = finish_book(stack.url, post_json(stack, chapters)["id"])
    # Then nothing renders: every segment comes from the cache
    assert again["status"] == "succeeded"
    assert again["segments_rendered"] == 0 and again["segments_cached"] == again["segments_total"]
    # When one paragraph of chapter two is changed
    edited = [chapters[0], ("Two", "A middle.\n\nA different ending of the middle."), chapters[2]]
    changed = finish_book(stack.url, post_json(stack, edited)["id"])
    # Then only that paragraph's segments render
    assert changed["status"] == "succeeded"
    assert 1 <= changed["segments_rendered"] <= 2
    assert changed["segments_cached"] == changed["segments_total"] - changed["segments_rendered"]
    assert changed["chapters"][0]["duration_s"] == pytest.approx(first["chapters"][0]["duration_s"])


def test_a_single_job_submitted_during_a_book_starts_before_the_book_finishes(stack: ApiProcess) -> None:
    # Given a book of many segments rendering on the only rendering worker
    paragraphs = "\n\n".join(f"Paragraph number {i} is spoken here." for i in range(24))
    book = post_json(stack, [("Long", paragraphs)], overrides={"num_steps": 8})
    wait_for(lambda: get_book(stack.url, book["id"])["segments_done"] >= 2, timeout=120, what="the book to start")
    # When a short interactive job is submitted
    job = requests.post(f"{stack.url}/v1/jobs", json={"text": "Quick one.", "overrides": FAST_JSON}, timeout=10)
    assert job.status_code == 202
    done = finish_job(stack.url, job.json()["id"], timeout=120)
    # Then it is done while the book is still rendering (the queues are separate)
    assert isinstance(done, dict) and done["status"] == "succeeded"
    during = get_book(stack.url, book["id"])
    assert during["status"] == "running" and during["segments_done"] < during["segments_total"]
    assert finish_book(stack.url, book["id"])["status"] == "succeeded"


def test_a_rendering_worker_killed_mid_book_loses_only_its_group(
    book_env: dict[str, str], start_api: Any, start_worker: Any
) -> None:
    # Given a book of many two-segment groups on one rendering worker (slow steps: the kill lands mid-group)
    api = start_api(book_env)
    doomed = start_worker(book_env)
    start_worker(book_env | {"ECHO_WORKER_ROLE": "assemble"})
    paragraphs = "\n\n".join(f"Sentence {i} of the killed book." for i in range(12))
    book = post_json(api, [("Only", paragraphs)], overrides={"num_steps": 30})
    wait_for(lambda: get_book(api.url, book["id"])["segments_done"] >= 2, timeout=180, what="the first group")
    # When the worker is SIGKILLed mid-book and another one starts
    doomed.kill()
    survivor = start_worker(book_env)
    done = finish_book(api.url, book["id"], timeout=300)
    # Then the book completes with every segment counted once
    assert done["status"] == "succeeded", done["error"]
    assert done["segments_rendered"] + done["segments_cached"] == done["segments_total"] == 12
    # And the groups that completed rendered each segment once: what the two workers report rendering
    # (the killed group never reported) plus what the re-delivered group found cached equals the book
    reported = sum(
        int(n) for log in (doomed.output(), survivor.output()) for n in re.findall(r"'rendered': (\d+)", log)
    )
    assert reported + done["segments_cached"] == done["segments_total"]
