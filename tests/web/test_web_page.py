"""The web page at ``/`` in headless Chromium against the real stack (tests/web/conftest.py): speech from
text to a playable <audio>, the API's error messages on the page, and a book filling in its chapters.

``ECHO_WEB_SCREENSHOT=docs/web-page.png`` makes the speech test save the page as it ends (docs/web.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests
from api_helpers import wav_bytes
from selenium.webdriver.common.by import By
from service_helpers import wait_for

BOOK = "Chapter 1: The Start\n\nHello there.\n\nChapter 2: The End\n\nGoodbye now.\n"


def by_id(page: Any, element_id: str) -> Any:
    return page.find_element(By.ID, element_id)


def type_into(page: Any, element_id: str, text: str) -> None:
    field = by_id(page, element_id)
    field.clear()
    field.send_keys(text)


def save_key(page: Any, token: str) -> None:
    type_into(page, "api-key", token)
    page.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def js(page: Any, script: str, *args: Any) -> Any:
    return page.execute_script(script, *args)


def visible_error(page: Any, element_id: str, timeout: float = 15) -> str:
    """The text of an error box once the page shows it."""
    wait_for(lambda: by_id(page, element_id).is_displayed(), timeout=timeout, what=f"#{element_id} to show")
    return str(by_id(page, element_id).text)


def api_error(stack: Any, body: dict[str, Any]) -> dict[str, Any]:
    """What the API itself answers to ``body`` (the same request the page sends)."""
    answer = requests.post(
        stack.api.url + "/v1/jobs", json=body, headers={"Authorization": f"Bearer {stack.token}"}, timeout=10
    )
    assert answer.status_code >= 400, answer.text
    return dict(answer.json()["error"])


def speak(page: Any, stack: Any, text: str) -> None:
    """Save the key, enter ``text`` (two diffusion steps, seed 7), press Speak and wait until the page
    shows the job succeeded and its <audio> element has loaded its source."""
    save_key(page, stack.token)
    type_into(page, "text", text)
    type_into(page, "steps", "2")
    type_into(page, "seed", "7")
    by_id(page, "job-submit").click()
    wait_for(
        lambda: by_id(page, "job").get_attribute("data-status") == "succeeded",
        timeout=60,
        what="the job to succeed on the page",
    )
    wait_for(
        lambda: js(page, "const a = document.getElementById('job-audio'); return a.readyState >= 1 && a.duration > 0"),
        timeout=15,
        what="the audio element to load its source",
    )


def test_text_becomes_a_playable_audio_element_with_live_progress(stack: Any, page: Any) -> None:
    """Given the page in a browser, an API with keys and a worker
    When the key and a text are entered (two diffusion steps, WAV) and Speak is pressed
    Then the progress reaches 100 % "succeeded", read from the job's event stream, and the <audio>
    element holds a source the browser has loaded: its duration is the rendered job's, and the download
    link points at the same audio."""
    speak(page, stack, "Hello from the web page.")
    assert by_id(page, "job").get_attribute("data-via") == "events"  # live progress, not polling
    assert by_id(page, "job-state").text.startswith("succeeded 100%")
    assert js(page, "return document.getElementById('job-progress').value") == 1
    assert by_id(page, "job-error").is_displayed() is False

    job = stack.get(f"/v1/jobs/{by_id(page, 'job').get_attribute('data-id')}").json()
    assert job["status"] == "succeeded"
    assert job["request"]["seed"] == 7 and job["request"]["text"] == "Hello from the web page."
    duration = js(page, "return document.getElementById('job-audio').duration")
    assert abs(duration - job["result"]["duration_s"]) < 0.05, (duration, job["result"])
    source = js(page, "return document.getElementById('job-audio').currentSrc")
    assert source.split("?")[0].endswith(f"/jobs/{job['id']}/audio.wav")  # the presigned object in S3
    assert by_id(page, "job-download").get_attribute("href") == source

    if target := os.environ.get("ECHO_WEB_SCREENSHOT"):
        page.save_screenshot(str(Path(target).resolve()))


def test_without_event_streams_the_page_polls_and_cancel_stops_the_job(stack: Any, page: Any) -> None:
    """Given a browser in which the event stream cannot be opened (fetch of .../events fails, as behind a
    proxy that refuses streams)
    When a long render (100 diffusion steps) is submitted and Cancel is pressed while it is under way
    Then the page follows the job by polling GET /v1/jobs/{id} instead, and shows it canceled, as the API
    has it."""
    js(
        page,
        """const original = window.fetch;
        window.fetch = (url, init) => String(url).endsWith('/events')
          ? Promise.reject(new TypeError('no event streams here')) : original(url, init);""",
    )
    save_key(page, stack.token)
    type_into(page, "text", "A long render, canceled.")
    type_into(page, "steps", "100")
    by_id(page, "job-submit").click()
    wait_for(lambda: by_id(page, "job").get_attribute("data-via") == "polling", timeout=15, what="polling")
    assert by_id(page, "job").get_attribute("data-status") in ("queued", "running")
    by_id(page, "job-cancel").click()

    wait_for(
        lambda: by_id(page, "job").get_attribute("data-status") == "canceled",
        timeout=30,
        what="the page to show the job canceled",
    )
    job = stack.get(f"/v1/jobs/{by_id(page, 'job').get_attribute('data-id')}").json()
    assert job["status"] == "canceled" and job["result"] is None
    assert by_id(page, "job-state").text.startswith("canceled")
    assert by_id(page, "job-audio").is_displayed() is False and by_id(page, "job-cancel").is_displayed() is False


def test_a_voice_uploaded_on_the_page_is_picked_and_speaks(stack: Any, page: Any, tmp_path: Path) -> None:
    """Given a reference clip (a WAV file)
    When it is uploaded on the page under a name and a text is spoken
    Then the voice is stored for the key, chosen in the voice list, and the job was rendered with it."""
    clip = tmp_path / "reference.wav"
    clip.write_bytes(wav_bytes(seconds=1.0))
    save_key(page, stack.token)
    page.find_element(By.CSS_SELECTOR, "#settings summary").click()
    by_id(page, "voice-file").send_keys(str(clip))
    type_into(page, "voice-name", "Page voice")
    page.find_element(By.CSS_SELECTOR, "#voice-form button[type=submit]").click()
    wait_for(lambda: by_id(page, "voice").get_attribute("value"), timeout=15, what="the new voice to be chosen")

    voice_id = by_id(page, "voice").get_attribute("value")
    voices = {v["id"]: v for v in stack.get("/v1/voices").json()["voices"]}
    assert voices[voice_id]["name"] == "Page voice"
    assert "Page voice" in by_id(page, "voice").find_element(By.CSS_SELECTOR, "option:checked").text
    speak(page, stack, "Spoken in the uploaded voice.")
    job = stack.get(f"/v1/jobs/{by_id(page, 'job').get_attribute('data-id')}").json()
    assert job["status"] == "succeeded" and job["request"]["voice"] == voice_id


def test_the_page_shows_the_apis_error_messages(stack: Any, page: Any) -> None:
    """Given the page opened without a key on an API that needs one
    When it loads, then the key is saved, and then a text over ECHO_MAX_TEXT_CHARS and an empty text are sent
    Then each refusal's message from the API's error envelope is on the page, with its code; the missing
    key's 401 message goes once the key is saved; nothing was queued."""
    jobs_before = [(j["id"], j["status"]) for j in stack.get("/v1/jobs").json()["jobs"]]
    unauthorized = visible_error(page, "page-error")
    assert "send Authorization: Bearer <API key>" in unauthorized and "unauthorized" in unauthorized

    save_key(page, stack.token)
    wait_for(lambda: not by_id(page, "page-error").is_displayed(), timeout=15, what="the 401 message to go")

    too_long = "a" * (stack.max_text_chars + 1)
    js(page, "document.getElementById('text').value = arguments[0]", too_long)
    by_id(page, "job-submit").click()
    expected = api_error(stack, {"text": too_long, "format": "wav", "preset": "Independent-High-Speaker-CFG"})
    shown = visible_error(page, "job-error")
    assert expected["code"] == "text_too_long" and f"ECHO_MAX_TEXT_CHARS={stack.max_text_chars}" in expected["message"]
    assert expected["message"] in shown and "text_too_long" in shown and "HTTP 413" in shown

    js(page, "document.getElementById('text').value = ''")
    by_id(page, "job-submit").click()
    expected = api_error(stack, {"text": "", "format": "wav", "preset": "Independent-High-Speaker-CFG"})
    wait_for(
        lambda: by_id(page, "job-error").get_attribute("data-code") == "invalid_request",
        timeout=15,
        what="the empty text's refusal",
    )
    assert expected["message"] in by_id(page, "job-error").text
    # (ids and states: a listing presigns its URLs afresh, so whole views differ from second to second)
    assert [(j["id"], j["status"]) for j in stack.get("/v1/jobs").json()["jobs"]] == jobs_before


def test_a_text_book_fills_in_its_chapters(stack: Any, page: Any, tmp_path: Path) -> None:
    """Given a plain-text book of two chapters
    When it is chosen on the page and submitted (two diffusion steps, MP3 chapter files)
    Then both chapters appear by their titles, each becomes "assembled" with a player that loads its file,
    the book succeeds and its M4B is offered."""
    book = tmp_path / "tiny-book.txt"
    book.write_text(BOOK)
    save_key(page, stack.token)
    type_into(page, "steps", "2")
    by_id(page, "book-file").send_keys(str(book))
    by_id(page, "book-submit").click()

    wait_for(
        lambda: by_id(page, "book-view").get_attribute("data-status") == "succeeded",
        timeout=90,
        what="the book to succeed on the page",
    )
    items = page.find_elements(By.CSS_SELECTOR, "#chapters li")
    assert [i.get_attribute("data-status") for i in items] == ["assembled", "assembled"]
    assert "The Start" in items[0].text and "The End" in items[1].text
    wait_for(
        lambda: js(page, "return [...document.querySelectorAll('#chapters audio')].every(a => a.duration > 0)"),
        timeout=15,
        what="the chapter players to load",
    )
    assert js(page, "return document.querySelectorAll('#chapters audio').length") == 2
    m4b = by_id(page, "book-download")
    assert m4b.is_displayed() and m4b.get_attribute("href").split("?")[0].endswith(".m4b")
    assert by_id(page, "book-progress").get_attribute("value") == "1"
