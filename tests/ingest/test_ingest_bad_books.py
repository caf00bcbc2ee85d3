"""Books the service refuses, each with the right code and a message that says what is wrong."""

from __future__ import annotations

import io
import zipfile

import pytest
from book_files import epub, lighthouse_epub3, opf3, simple_epub, xhtml
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.errors import ErrorCode
from jobs.ingest import BookRejected, IngestLimits, read_book

MIB = 1024 * 1024
LIGHTHOUSE = lighthouse_epub3()


def _rejected(data: bytes, filename: str = "book.epub", **kwargs: object) -> BookRejected:
    with pytest.raises(BookRejected) as caught:
        read_book(data, filename, **kwargs)  # type: ignore[arg-type]
    return caught.value


@pytest.fixture(scope="module")
def zeros_bomb() -> bytes:
    """An EPUB-looking zip with one member of 200 MB of zeros (about 1 MB compressed), built streaming."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("mimetype", "application/epub+zip")
        with zf.open("OEBPS/zeros.xhtml", "w", force_zip64=True) as member:
            chunk = bytes(MIB)
            for _ in range(200):
                member.write(chunk)
    return buffer.getvalue()


def test_a_file_that_is_not_a_zip_is_not_an_epub() -> None:
    # Given text uploaded as an .epub
    # When it is read
    error = _rejected(b"just some text, not a zip", "book.epub")
    # Then it is an invalid book, and the message says why
    assert error.code == ErrorCode.INVALID_BOOK
    assert error.message == "not an EPUB: the file is not a zip archive"


def test_an_empty_file_is_refused() -> None:
    error = _rejected(b"", "book.txt")
    assert (error.code, error.message) == (ErrorCode.INVALID_BOOK, "the file is empty")


def test_a_zip_without_container_xml_is_not_an_epub() -> None:
    # Given a zip with a mimetype but no META-INF/container.xml
    data = epub({"OEBPS/content.opf": "<package/>"}, container=False)
    # When it is read, Then the message names the missing file
    error = _rejected(data)
    assert error.code == ErrorCode.INVALID_BOOK
    assert error.message == "not an EPUB: the zip has no META-INF/container.xml"


def test_a_container_naming_a_missing_package_document_is_refused() -> None:
    error = _rejected(epub({}, opf="OEBPS/missing.opf"))
    assert error.code == ErrorCode.INVALID_BOOK
    assert "OEBPS/missing.opf" in error.message and "missing" in error.message


def test_an_images_only_epub_has_no_text() -> None:
    # Given an EPUB of three pages that are only images
    pages = {f"p{i}.xhtml": f'<div><img src="i{i}.png" alt="plate {i}"/></div>' for i in range(3)}
    # When it is read
    error = _rejected(simple_epub(pages))
    # Then it has no text to speak, and the message says what it found
    assert error.code == ErrorCode.BOOK_HAS_NO_TEXT
    assert error.message == "the book has no text to speak: 3 documents in the spine, 3 with images, none with text"


def test_a_zip_bomb_member_is_refused_without_inflating_it(zeros_bomb: bytes) -> None:
    # Given a zip with one member of 200 MB of zeros
    # When it is read with the default limits
    error = _rejected(zeros_bomb)
    # Then it is refused by the per-member limit, named in the message
    assert error.code == ErrorCode.INVALID_BOOK
    assert "OEBPS/zeros.xhtml" in error.message and "max_member_bytes=67,108,864" in error.message


def test_a_member_that_expands_too_much_is_refused_by_the_ratio_limit() -> None:
    # Given a 2 MiB member of zeros (under the size limits, but it compresses about 1000 times)
    data = epub({"OEBPS/zeros.xhtml": bytes(2 * MIB)})
    # When it is read
    error = _rejected(data)
    # Then the ratio limit refuses it
    assert "expands" in error.message and "max_ratio=100" in error.message


def test_the_total_uncompressed_size_and_member_count_are_limited() -> None:
    # Given a valid book and limits smaller than it
    data = lighthouse_epub3()
    # When it is read with those limits, Then each refusal names its limit
    assert "max_uncompressed_bytes=1,000" in _rejected(data, limits=IngestLimits(max_uncompressed_bytes=1000)).message
    assert "max_members=5" in _rejected(data, limits=IngestLimits(max_members=5)).message
    assert "max_chapters=2" in _rejected(data, limits=IngestLimits(max_chapters=2)).message
    assert "max_characters=50" in _rejected(data, limits=IngestLimits(max_characters=50)).message


@pytest.mark.parametrize("where", ["opf", "chapter"])
def test_an_external_entity_is_refused(where: str) -> None:
    # Given an EPUB with an XXE declaration in its package document or in a chapter
    xxe = '<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    chapter = xhtml("<p>&xxe;</p>")
    opf = opf3('<item id="c" href="c.xhtml" media-type="application/xhtml+xml"/>', '<itemref idref="c"/>')
    if where == "opf":
        opf = xxe + opf.split("\n", 1)[1]
    else:
        chapter = xxe + chapter.split("\n", 2)[2]
    # When it is read
    error = _rejected(epub({"OEBPS/content.opf": opf, "OEBPS/c.xhtml": chapter}))
    # Then it is refused as unsafe, naming the member
    assert error.code == ErrorCode.INVALID_BOOK
    member = "OEBPS/content.opf" if where == "opf" else "OEBPS/c.xhtml"
    assert error.message.startswith(f"unsafe XML in {member}")


def test_billion_laughs_in_container_xml_is_refused() -> None:
    # Given a container.xml with nested internal entities
    laughs = '<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;">]><container>&b;</container>'
    data = epub({"META-INF/container.xml": laughs}, container=False)
    # When it is read, Then it is refused before any entity is expanded
    assert _rejected(data).message.startswith("unsafe XML in META-INF/container.xml")


def test_encryption_xml_means_drm() -> None:
    # Given an EPUB whose encryption.xml encrypts a chapter with AES
    encryption = """<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
        xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
        <enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
        <enc:CipherData><enc:CipherReference URI="OEBPS/text/part-001.xhtml"/></enc:CipherData>
        </enc:EncryptedData></encryption>"""
    # When it is read
    error = _rejected(lighthouse_epub3(extra={"META-INF/encryption.xml": encryption}))
    # Then it is refused as DRM-protected, naming what is encrypted
    assert error.code == ErrorCode.BOOK_DRM
    assert error.message == "the EPUB is DRM-protected: META-INF/encryption.xml encrypts OEBPS/text/part-001.xhtml"


@pytest.mark.parametrize("name", ["../../etc/evil.xhtml", "/abs/evil.xhtml", "OEBPS/../../x.xhtml", "C:/x.xhtml"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    # Given an otherwise valid EPUB with a member whose name escapes the archive
    data = lighthouse_epub3(extra={name: "x"})
    # When it is read, Then it is refused, naming the member
    error = _rejected(data)
    assert error.code == ErrorCode.INVALID_BOOK
    assert error.message.startswith(f"unsafe member name in the zip: {name!r}")


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (b"%PDF-1.7 ...", "book.pdf", "a PDF is not a supported book format"),
        (b"%PDF-1.7 ...", "book.txt", "a PDF is not a supported book format"),
        (b"<w:document/>", "book.docx", "unsupported book format '.docx'"),
        (b"\x00\x01\x02\x03" * 100, "book.txt", "not a text file"),
    ],
)
def test_other_formats_are_refused_by_content_or_name(data: bytes, filename: str, expected: str) -> None:
    error = _rejected(data, filename)
    assert error.code == ErrorCode.INVALID_BOOK
    assert error.message.startswith(expected)


def test_text_and_markdown_without_text_have_no_text() -> None:
    assert _rejected(b"  \n\n\t\n", "empty.txt").code == ErrorCode.BOOK_HAS_NO_TEXT
    assert _rejected(b"# Title\n\n![a picture](p.png)\n\n```\ncode()\n```\n", "x.md").code == ErrorCode.BOOK_HAS_NO_TEXT


@settings(max_examples=150, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_corrupted_epub_is_read_or_refused_but_never_crashes(flips: list[tuple[int, int]]) -> None:
    # Given a valid EPUB with a few bytes overwritten anywhere (headers, directory, compressed data)
    data = bytearray(LIGHTHOUSE)
    for position, value in flips:
        data[position % len(data)] = value
    # When it is read
    try:
        book = read_book(bytes(data), "book.epub")
    except BookRejected as error:
        # Then it is refused with one of the book codes...
        assert error.code in (ErrorCode.INVALID_BOOK, ErrorCode.BOOK_HAS_NO_TEXT, ErrorCode.BOOK_DRM)
    else:
        # ...or read into a book with text
        assert book.characters > 0


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), filename=st.sampled_from(["b.txt", "b.md", "b"]))
def test_arbitrary_bytes_as_text_are_read_or_refused_but_never_crash(data: bytes, filename: str) -> None:
    try:
        read_book(data, filename)
    except BookRejected as error:
        assert error.code in (ErrorCode.INVALID_BOOK, ErrorCode.BOOK_HAS_NO_TEXT)
