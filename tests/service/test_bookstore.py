"""The book contract and the book store against a real redis-server: what counts once, what completes."""

from __future__ import annotations

import pytest
import redis

from jobs.books import BookRequest, PlannedSegment, SegmentEnd, group_segments, segment_seed
from jobs.bookstore import BookStore
from jobs.contract import ContractError, JobState

pytest_plugins = ["api_fixtures"]


@pytest.fixture
def books(redis_client: redis.Redis) -> BookStore:
    return BookStore(redis_client, ttl_s=600)


def _planned(books: BookStore, segments_per_chapter: tuple[int, ...] = (2, 1)) -> str:
    record, created = books.create("alice", {"seed": 1}, title="T", author="A")
    assert created and record.status is JobState.QUEUED
    chapters = [{"index": i, "title": f"C{i}", "segments_total": n} for i, n in enumerate(segments_per_chapter)]
    assert books.mark_planned(record.id, chapters, sum(segments_per_chapter))
    return record.id


def test_a_segment_counts_once_however_often_its_group_is_delivered(books: BookStore) -> None:
    # Given a planned book of two chapters (2 + 1 segments)
    book_id = _planned(books)
    # When segment 0 is reported done twice (a re-delivered group) and segment 1 once, from the cache
    first = books.segment_done(book_id, 0, 0, "d0", cached=False, render_s=1.5)
    again = books.segment_done(book_id, 0, 0, "d0", cached=False, render_s=1.5)
    second = books.segment_done(book_id, 1, 0, "d1", cached=True)
    # Then it is counted once, and the call that completes chapter 0 learns it
    assert first == (True, 1) and again == (False, 1) and second == (True, 2)
    record = books.get(book_id)
    assert record is not None and record.status is JobState.RUNNING
    assert (record.segments_done, record.segments_rendered, record.segments_cached) == (2, 1, 1)
    assert record.chapters[0].segments_done == 2 and record.chapters[0].status == "assembling"
    assert record.chapters[1].status == "waiting" and record.progress == pytest.approx(2 / 3)
    # And the digests say where each segment's audio is
    assert books.segments_done(book_id) == {0: "d0", 1: "d1"}


def test_chapters_assembled_are_counted_and_the_book_succeeds_with_its_result(books: BookStore) -> None:
    # Given a planned book whose segments are all done
    book_id = _planned(books)
    for index, chapter in ((0, 0), (1, 0), (2, 1)):
        books.segment_done(book_id, index, chapter, f"d{index}", cached=False)
    # When both chapters are assembled (one of them twice, as a re-delivered task would)
    assert books.chapter_assembled(book_id, 0, {"key": "k0", "duration_s": 2.0}) == 1
    assert books.chapter_assembled(book_id, 0, {"key": "k0", "duration_s": 2.0}) == 1
    assert books.chapter_assembled(book_id, 1, {"key": "k1", "duration_s": 1.5}) == 2
    # Then the book's audio is the chapters' sum, and it can succeed exactly once
    assert books.succeed(book_id, {"key": "books/x/book.m4b"}) and not books.succeed(book_id, {"key": "again"})
    record = books.get(book_id)
    assert record is not None and record.status is JobState.SUCCEEDED and record.audio_s == 3.5
    assert record.progress == 1.0 and record.result == {"key": "books/x/book.m4b"}
    assert books.counts_by_state()[JobState.SUCCEEDED] == 1


def test_a_canceled_book_stops_and_a_retry_reopens_it_keeping_done_segments(books: BookStore) -> None:
    # Given a planned book with one segment done
    book_id = _planned(books)
    books.segment_done(book_id, 0, 0, "d0", cached=False)
    # When it is canceled
    record = books.request_cancel(book_id)
    # Then it is canceled at once and its workers see it stopped
    assert record is not None and record.status is JobState.CANCELED and books.is_stopped(book_id)
    # And a retry reopens it (queued) with the done segment still counted
    assert books.reopen(book_id)
    again = books.get(book_id)
    assert again is not None and again.status is JobState.QUEUED and again.segments_done == 1
    assert not books.is_stopped(book_id) and not again.cancel_requested
    # And planning it again keeps its counts
    assert books.mark_planned(book_id, [{"index": 0, "title": "C0", "segments_total": 3}], 3)
    assert books.get(book_id).segments_done == 1  # type: ignore[union-attr]


def test_books_belong_to_their_owner_and_idempotency_keys_return_the_same_book(books: BookStore) -> None:
    # Given alice's book submitted with an idempotency key
    first, created = books.create("alice", {"seed": 1}, title="T", author=None, idempotency_key="k1")
    # When she sends it again, and bob asks for it
    again, created_again = books.create("alice", {"seed": 1}, title="T", author=None, idempotency_key="k1")
    # Then the same book comes back, and bob cannot see it
    assert created and not created_again and again.id == first.id
    assert books.get(first.id, owner="bob") is None
    assert [b.id for b in books.list_books("alice")] == [first.id] and books.list_books("bob") == []


def test_a_segment_seed_depends_on_its_text_not_its_position() -> None:
    # Given the same sentence at two places and another sentence
    # When seeds are derived from one book seed
    # Then the same text gets the same seed wherever it is, other text or another book seed another one
    assert segment_seed(7, "It was late.") == segment_seed(7, "It was late.")
    assert segment_seed(7, "It was late.") != segment_seed(7, "It was early.")
    assert segment_seed(7, "It was late.") != segment_seed(8, "It was late.")
    assert 0 <= segment_seed(2**63 - 1, "x") < 2**63


def test_groups_hold_similar_lengths_and_every_segment_once() -> None:
    # Given segments of mixed lengths
    texts = ["a" * 10, "b" * 200, "c" * 12, "d" * 190, "e" * 11]
    segments = [PlannedSegment(i, 0, t, i, SegmentEnd.SENTENCE) for i, t in enumerate(texts)]
    # When they are grouped by two
    groups = group_segments(segments, 2)
    # Then each segment is in exactly one group, short ones with short ones
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert groups[0] == [0, 4] and groups[-1] == [1]


def test_a_book_request_names_every_bad_field() -> None:
    # Given a request with a bad format, pause, loudness and chapter selection
    bad = {
        "book_id": "b",
        "seed": 1,
        "format": "pcm",
        "pauses": {"sentence_s": 30, "breath_s": 1},
        "loudness_lufs": -3,
        "chapters": [],
    }
    # When it is validated
    with pytest.raises(ContractError) as caught:
        BookRequest.from_dict(bad)
    # Then the message names each field and its limits
    message = str(caught.value)
    for part in (
        "format must be one of",
        "pauses.sentence_s",
        "between 0 and 3",
        "pauses.breath_s",
        "loudness_lufs",
        "chapters must be",
    ):
        assert part in message
    # And a good request round-trips
    good = BookRequest(book_id="b", seed=3, chapters=(0, 2), pauses={"paragraph_s": 1.0})
    assert BookRequest.from_dict(good.to_dict()) == good
    assert good.pause_seconds()["paragraph_s"] == 1.0 and good.pause_seconds()["sentence_s"] == 0.35


def test_a_segment_whose_audio_is_lost_is_uncounted_so_a_retry_renders_it(books: BookStore) -> None:
    # Given a planned book with both segments of chapter 0 done, one rendered and one from the cache
    book_id = _planned(books)
    books.segment_done(book_id, 0, 0, "d0", cached=False)
    books.segment_done(book_id, 1, 0, "d1", cached=True)
    # When the assembler finds segment 1's audio gone from the cache
    assert books.segment_lost(book_id, 1, 0) and not books.segment_lost(book_id, 1, 0)
    # Then it is no longer counted anywhere, so planning again renders it
    record = books.get(book_id)
    assert record is not None and (record.segments_done, record.segments_cached, record.segments_rendered) == (1, 0, 1)
    assert record.chapters[0].segments_done == 1 and books.segments_done(book_id) == {0: "d0"}
    # And counting it again works as for any segment
    assert books.segment_done(book_id, 1, 0, "d1b", cached=False) == (True, 2)
