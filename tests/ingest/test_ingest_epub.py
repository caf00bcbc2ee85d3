"""Reading EPUB 3 and EPUB 2 books built in the test: chapters, titles, text, metadata, cover."""

from __future__ import annotations

from book_files import COVER_JPEG, epub, lighthouse_epub3, old_tales_epub2, opf3, simple_epub, xhtml

from jobs.ingest import Cover, read_book


def test_an_epub3_has_its_chapters_in_spine_order_titled_from_the_navigation_document() -> None:
    # Given an EPUB 3 whose TOC titles differ from its file names and headings, with a cover page,
    # an image-only title page and the nav document in the spine
    data = lighthouse_epub3()
    # When it is read
    book = read_book(data, "upload.epub")
    # Then the three chapters come in spine order with the TOC's titles; pages without text are skipped
    assert [c.title for c in book.chapters] == ["The Storm Begins", "Into the Dark", "Morning"]
    assert book.source_format == "epub"


def test_epub_text_has_no_markup_scripts_styles_page_numbers_or_note_marks() -> None:
    # Given the EPUB 3 book
    book = read_book(lighthouse_epub3(), "upload.epub")
    # When its first chapter's paragraphs are looked at
    first = book.chapters[0].paragraphs
    # Then block elements are paragraphs, inline markup is gone, entities decoded, a single <br> is a space
    assert first[:4] == (
        "One",
        "It was a dark and stormy night.",
        "The keeper\u2019s lamp & wick burned low.",
        "Nested block text.",
    )
    text = " ".join(p for c in book.chapters for p in c.paragraphs)
    assert "never spoken" not in text and "color" not in text and "<" not in text
    assert "Contents" not in text  # the nav document is not read


def test_a_toc_entry_with_a_fragment_starts_its_chapter_at_that_element() -> None:
    # Given the EPUB 3 book, whose second TOC entry points at part-002.xhtml#start, after an epigraph
    book = read_book(lighthouse_epub3(), "upload.epub")
    # Then the chapter starts at the anchored heading
    assert book.chapters[1].paragraphs == ("Two", "The sea rose.")
    # And the epigraph before the anchor is not lost: it closes chapter one
    assert book.chapters[0].paragraphs[-1] == "An epigraph before the anchor."


def test_title_author_and_cover_come_from_the_package_metadata() -> None:
    # Given the EPUB 3 book with an author and an illustrator, and a cover-image item
    book = read_book(lighthouse_epub3(), "upload.epub")
    # Then the title is dc:title, the author is the creator whose role is author, the cover is kept
    assert book.title == "The Lighthouse Keeper"
    assert book.author == "Ada Quill"
    assert book.cover == Cover("image/jpeg", COVER_JPEG)


def test_an_epub2_takes_chapters_from_its_ncx_including_nested_and_mid_file_entries() -> None:
    # Given an EPUB 2 with an NCX only, XHTML 1.1 doctypes, an &nbsp; and <meta name="cover">
    data = old_tales_epub2()
    # When it is read
    book = read_book(data, "tales.epub")
    # Then the NCX's entries, nested one included, start the chapters, even in the middle of a file
    assert [c.title for c in book.chapters] == ["Part the First", "The Miller", "The Smith"]
    assert book.chapters[0].paragraphs == ("Part I", "Of mills and smiths.")
    assert book.chapters[1].paragraphs == ("I. The Miller", "The miller ground corn.")
    # And the author is the creator with role "aut" (not the editor), the cover the meta one
    assert (book.title, book.author) == ("Old Tales", "Cyril Old")
    assert book.cover is not None and book.cover.data == COVER_JPEG


def test_text_before_the_first_toc_entry_is_kept_as_its_own_chapter() -> None:
    # Given a book whose TOC starts at chapter 1 but whose spine starts with a preface with text
    data = simple_epub(
        {"preface.xhtml": "<h1>Preface</h1><p>Read me first.</p>", "c1.xhtml": "<h1>1</h1><p>Body.</p>"},
        nav='<nav epub:type="toc"><ol><li><a href="c1.xhtml">The First Chapter</a></li></ol></nav>',
    )
    # When it is read
    book = read_book(data, "b.epub")
    # Then the preface is a chapter titled from its heading, then the TOC's chapter
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("Preface", ("Preface", "Read me first.")),
        ("The First Chapter", ("1", "Body.")),
    ]


def test_an_epub_without_a_toc_gets_one_chapter_per_file_titled_by_its_heading() -> None:
    # Given an EPUB with no nav document and no NCX
    data = simple_epub({"a.xhtml": "<h2>Arrival</h2><p>We came.</p>", "b.xhtml": "<p>No heading here.</p>"})
    # When it is read
    book = read_book(data, "b.epub")
    # Then each file is a chapter, titled by its first heading, else numbered (never by the file name)
    assert [c.title for c in book.chapters] == ["Arrival", "Chapter 2"]


def test_an_html_contents_page_in_the_spine_is_not_read_aloud() -> None:
    # Given a book whose spine starts with an HTML contents page that is only links
    links = "".join(f'<p><a href="c.xhtml#s{i}">Section {i}</a></p>' for i in range(5))
    data = simple_epub({"contents.xhtml": f"<h1>Contents</h1>{links}", "c.xhtml": "<p>The story.</p>"})
    # When it is read
    book = read_book(data, "b.epub")
    # Then only the story is a chapter
    assert [c.paragraphs for c in book.chapters] == [("The story.",)]


def test_font_obfuscation_in_encryption_xml_is_not_drm() -> None:
    # Given an EPUB whose encryption.xml only obfuscates a font with the IDPF algorithm
    encryption = """<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
        xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
        <enc:EncryptionMethod Algorithm="http://www.idpf.org/2008/embedding"/>
        <enc:CipherData><enc:CipherReference URI="OEBPS/fonts/serif.otf"/></enc:CipherData>
        </enc:EncryptedData></encryption>"""
    data = lighthouse_epub3(extra={"META-INF/encryption.xml": encryption})
    # When it is read
    book = read_book(data, "upload.epub")
    # Then it reads like any other
    assert len(book.chapters) == 3


def test_paragraphs_split_at_double_line_breaks_and_link_hrefs_are_not_text() -> None:
    # Given a chapter converted from another format, with <br/><br/> between paragraphs and a link
    data = simple_epub({"c.xhtml": '<div>First para.<br/><br/>Second <a href="http://x.org">link</a>.<br/></div>'})
    # When it is read
    book = read_book(data, "b.epub")
    # Then the double break is a paragraph boundary and the link keeps only its text
    assert book.chapters[0].paragraphs == ("First para.", "Second link.")


def test_a_chapter_spanning_several_files_keeps_them_together() -> None:
    # Given a TOC with entries for a.xhtml and c.xhtml, and b.xhtml between them in the spine
    data = simple_epub(
        {"a.xhtml": "<p>A.</p>", "b.xhtml": "<p>B.</p>", "c.xhtml": "<p>C.</p>"},
        nav='<nav epub:type="toc"><ol><li><a href="c.xhtml">Second</a></li>'
        '<li><a href="a.xhtml">First</a></li></ol></nav>',
    )
    # When it is read
    book = read_book(data, "b.epub")
    # Then b.xhtml continues the first chapter, and the chapters follow the spine, not the TOC's order
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("First", ("A.", "B.")), ("Second", ("C.",))]


def test_a_package_at_the_zip_root_with_url_encoded_names_is_read() -> None:
    # Given an EPUB whose OPF sits at the root and whose chapter file name has a space, escaped in hrefs
    opf = opf3('<item id="c" href="my%20chapter.xhtml" media-type="application/xhtml+xml"/>', '<itemref idref="c"/>')
    data = epub({"content.opf": opf, "my chapter.xhtml": xhtml("<h1>Hello</h1><p>World.</p>")}, opf="content.opf")
    # When it is read, Then the chapter is found
    assert read_book(data, "b.epub").chapters[0].paragraphs == ("Hello", "World.")


def test_sloppy_html_in_an_old_epub_is_still_read() -> None:
    # Given an EPUB 2 style text/html file with no </head>, unclosed <p>s and an SVG with a <title>
    page = "<html><head><title>Old</title><meta charset='utf-8'><body><p>One<p>Two<svg><title>pic</title></svg>"
    opf = opf3('<item id="c" href="c.html" media-type="text/html"/>', '<itemref idref="c"/>')
    data = epub({"OEBPS/content.opf": opf, "OEBPS/c.html": page})
    # When it is read, Then its paragraphs are there and the SVG's title is not
    assert read_book(data, "old.epub").chapters[0].paragraphs == ("One", "Two")
