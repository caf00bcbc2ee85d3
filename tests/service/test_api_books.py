"""POST /v1/audiobooks over real HTTP (real Redis, S3 on moto, no worker): what is accepted, stored and
queued, and what is refused with a named reason while nothing is stored or queued."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import jsonschema
import pytest
import redis
from api_helpers import ApiServer, queued_tasks
from book_files import epub, lighthouse_epub3, opf3, simple_epub, xhtml

from api.book_schemas import Book as BookView
from jobs import contract

pytest_plugins = ["api_fixtures"]


def _post_file(api: ApiServer, data: bytes, name: str, **form: str) -> dict:
    answer = api.call("POST", "/v1/audiobooks", files={"file": (name, data)}, data=form)
    return {"status": answer.status_code, "body": answer.json(), "headers": answer.headers}


def _stored_books(api: ApiServer) -> set[str]:
    listed = api.s3().list_objects_v2(Bucket=api.bucket, Prefix="books/")
    return {o["Key"] for o in listed.get("Contents", [])}


def _nothing_queued_or_stored(api: ApiServer, redis_client: redis.Redis, stored_before: set[str]) -> None:
    assert queued_tasks(redis_client, contract.QUEUE_ASSEMBLY) == []
    assert api.call("GET", "/v1/audiobooks").json()["books"] == []
    assert _stored_books(api) == stored_before


def test_an_epub_is_read_stored_and_queued_for_planning(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given an EPUB with a table of contents, a cover and a navigation page
    # When alice submits it with options as form fields
    sent = _post_file(
        api,
        lighthouse_epub3(),
        "lighthouse.epub",
        format="opus",
        seed="7",
        chapters="0,2",
        pause_paragraph_s="1.2",
        overrides=json.dumps({"num_steps": 4}),
    )
    # Then it is accepted with its chapters from the TOC, and one planning task is queued on the CPU queue
    assert sent["status"] == 202, sent["body"]
    book = sent["body"]
    assert sent["headers"]["Location"] == f"/v1/audiobooks/{book['id']}"
    assert book["status"] == "queued" and book["title"] == "The Lighthouse Keeper" and book["author"] == "Ada Quill"
    assert book["request"]["chapters"] == [0, 2] and book["request"]["format"] == "opus"
    assert book["request"]["pauses"] == {"paragraph_s": 1.2} and book["request"]["seed"] == 7
    tasks = queued_tasks(redis_client, contract.QUEUE_ASSEMBLY)
    assert [(t["task"], t["kwargs"]) for t in tasks] == [(contract.BOOK_PLAN, {"book_id": book["id"]})]
    # (and it left the outbox that a worker would send it from: worker.recovery.send_unsent)
    assert redis_client.zcard("echo:book_outbox") == 0 and redis_client.exists(f"echo:book:{book['id']}")
    # And the source, the parsed book and the cover are in storage
    s3 = api.s3()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=api.bucket, Prefix=f"books/{book['id']}/")["Contents"]}
    assert keys == {f"books/{book['id']}/source.epub", f"books/{book['id']}/book.json", f"books/{book['id']}/cover"}
    parsed = json.loads(s3.get_object(Bucket=api.bucket, Key=f"books/{book['id']}/book.json")["Body"].read())
    assert [c["title"] for c in parsed["chapters"]] == ["The Storm Begins", "Into the Dark", "Morning"]
    # And bob cannot see it
    assert api.call("GET", f"/v1/audiobooks/{book['id']}", as_="bob").status_code == 404


def test_a_json_book_and_an_idempotent_replay(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a book sent as JSON chapters with an Idempotency-Key
    body = {"title": "Notes", "author": "Me", "chapters": [{"title": "A", "text": "First.\n\nSecond."}], "seed": 1}
    first = api.call("POST", "/v1/audiobooks", json=body, headers={"Idempotency-Key": "book-1"})
    # When the same request is sent again, and then another body with the same key
    again = api.call("POST", "/v1/audiobooks", json=body, headers={"Idempotency-Key": "book-1"})
    other = api.call("POST", "/v1/audiobooks", json={**body, "seed": 2}, headers={"Idempotency-Key": "book-1"})
    # Then the replay returns the same book without queueing it twice, and the other body conflicts
    assert first.status_code == 202 and again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(queued_tasks(redis_client, contract.QUEUE_ASSEMBLY)) == 1
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        with zf.open("OEBPS/zeros.xhtml", "w", force_zip64=True) as member:
            for _ in range(100):
                member.write(bytes(1 << 20))
    return buffer.getvalue()


def _xxe_epub() -> bytes:
    xxe = '<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    return epub(
        {
            "OEBPS/content.opf": xxe
            + opf3('<item id="a" href="a.xhtml" media-type="application/xhtml+xml"/>', '<itemref idref="a"/>').split(
                "\n", 1
            )[1],
            "OEBPS/a.xhtml": xhtml("<p>&xxe;</p>"),
        }
    )


BAD_BOOKS = {
    "not an epub": (b"PK\x03\x04 not really a zip", "book.epub", "invalid_book", "not an EPUB"),
    "empty": (b"", "book.txt", "invalid_book", "empty"),
    "images only": (simple_epub({"a.xhtml": '<img src="x.png"/>'}), "pics.epub", "book_has_no_text", "no text"),
    "zip bomb": (_zip_bomb(), "bomb.epub", "invalid_book", "max_"),
    "external entity": (_xxe_epub(), "xxe.epub", "invalid_book", "entit"),
    "pdf": (b"%PDF-1.7 ...", "book.pdf", "invalid_book", "PDF"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOOKS))
def test_a_bad_book_is_refused_with_its_reason_and_nothing_is_kept(
    api: ApiServer, redis_client: redis.Redis, case: str
) -> None:
    # Given a bad book file
    data, name, code, words = BAD_BOOKS[case]
    before = _stored_books(api)
    # When it is submitted
    sent = _post_file(api, data, name)
    # Then it is a 4xx with the code and a message that says which problem, naming the file field
    assert 400 <= sent["status"] < 500, sent["body"]
    error = sent["body"]["error"]
    assert error["code"] == code and words.lower() in error["message"].lower(), error
    assert error["message"].startswith("file: ")
    # And nothing was stored or queued
    _nothing_queued_or_stored(api, redis_client, before)


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"format": "pcm"}, "format"),
        ({"pause_sentence_s": "30"}, "pause_sentence_s"),
        ({"loudness_lufs": "-3"}, "loudness_lufs"),
        ({"chapters": "0,9"}, "select_chapters"),
        ({"chapters": "one"}, "chapters"),
        ({"voice": "nobody"}, "voice"),
        ({"overrides": json.dumps({"num_steps": 1000})}, "overrides.num_steps"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_option_names_its_field_and_nothing_is_kept(
    api: ApiServer, redis_client: redis.Redis, form: dict[str, str], field: str
) -> None:
    # Given a good book with one bad option
    before = _stored_books(api)
    # When it is submitted
    sent = _post_file(api, lighthouse_epub3(), "lighthouse.epub", **form)
    # Then the answer is 422 naming the field
    assert sent["status"] == 422, sent["body"]
    assert field in json.dumps(sent["body"]["error"]), sent["body"]
    # And nothing was stored or queued
    _nothing_queued_or_stored(api, redis_client, before)


def test_a_book_over_the_character_limit_names_the_setting(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API whose books may hold 1,000 characters (ECHO_MAX_BOOK_CHARS)
    api = launch_api(api_env | {"ECHO_MAX_BOOK_CHARS": "1000"})
    before = _stored_books(api)
    # When a 2,000-character book arrives as JSON, and as a text file
    as_json = api.call("POST", "/v1/audiobooks", json={"chapters": [{"title": "Long", "text": "word " * 400}]})
    as_file = _post_file(api, ("word " * 400).encode(), "long.txt")
    # Then both are refused naming the setting, and nothing is stored or queued
    assert as_json.status_code == 413 and "ECHO_MAX_BOOK_CHARS=1,000" in as_json.json()["error"]["message"]
    assert as_file["status"] == 422 and "ECHO_MAX_BOOK_CHARS" in as_file["body"]["error"]["message"]
    _nothing_queued_or_stored(api, redis_client, before)


def test_a_running_book_cannot_be_retried_and_a_canceled_one_can(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a queued book
    body = {"chapters": [{"title": "A", "text": "Hello there."}]}
    book = api.call("POST", "/v1/audiobooks", json=body).json()
    # When it is retried while queued, then canceled and retried
    early = api.call("POST", f"/v1/audiobooks/{book['id']}/retry")
    canceled = api.call("DELETE", f"/v1/audiobooks/{book['id']}")
    retried = api.call("POST", f"/v1/audiobooks/{book['id']}/retry")
    # Then the first retry is a conflict, the cancel is immediate, and the retry queues it again
    assert early.status_code == 409 and early.json()["error"]["code"] == "conflict"
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert [t["task"] for t in queued_tasks(redis_client, contract.QUEUE_ASSEMBLY)] == [contract.BOOK_PLAN] * 2
    # And its audio is not there yet
    assert api.call("GET", f"/v1/audiobooks/{book['id']}/audio").status_code == 409


def test_a_book_as_served_matches_the_published_schema(api: ApiServer) -> None:
    # Given the spec and a served book
    spec = api.call("GET", "/v1/openapi.json", as_=None).json()
    book = api.call("POST", "/v1/audiobooks", json={"chapters": [{"title": "A", "text": "Hi."}]}).json()
    listed = api.call("GET", "/v1/audiobooks").json()
    # When they are checked against the Book and BookList schemas, Then they conform (and pydantic agrees)
    for name, served in (("Book", book), ("BookList", listed)):
        jsonschema.validate(served, {**spec["components"]["schemas"][name], "components": spec["components"]})
    BookView.model_validate(book)
    assert {"/v1/audiobooks", "/v1/audiobooks/{id}", "/v1/audiobooks/{id}/retry"} <= set(spec["paths"])
