"""Real book files built in the tests: EPUB 3 and EPUB 2 zips written with zipfile, plus bad ones.

``epub(files)`` writes ``mimetype`` first and stored, as OCF requires, then the given members.
"""

from __future__ import annotations

import io
import zipfile

COVER_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) + b"\xff\xd9"
CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="{opf}" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def epub(files: dict[str, str | bytes], *, opf: str = "OEBPS/content.opf", container: bool = True) -> bytes:
    """A zip with ``mimetype`` first (stored), ``META-INF/container.xml`` naming ``opf``, then ``files``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        if container:
            zf.writestr("META-INF/container.xml", CONTAINER.format(opf=opf))
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def xhtml(body: str, *, title: str = "The Lighthouse Keeper", doctype: str = "<!DOCTYPE html>") -> str:
    """An EPUB 3 content document around ``body``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
{doctype}
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>{title}</title><link rel="stylesheet" href="../style.css"/><style>p {{ color: red; }}</style></head>
<body>{body}</body></html>"""


def opf3(manifest: str, spine: str, *, metadata: str | None = None) -> str:
    metadata = (
        metadata
        or """<dc:title>The Lighthouse Keeper</dc:title>
    <dc:creator id="author">Ada Quill</dc:creator>
    <meta refines="#author" property="role" scheme="marc:relators">aut</meta>
    <dc:creator id="artist">Ben Sketch</dc:creator>
    <meta refines="#artist" property="role" scheme="marc:relators">ill</meta>"""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="uid">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="uid">urn:uuid:12345678-1234-1234-1234-123456789abc</dc:identifier>
    <dc:language>en</dc:language>
    {metadata}
  </metadata>
  <manifest>{manifest}</manifest>
  <spine>{spine}</spine>
</package>"""


NAV = """<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>
  <li><a href="part-001.xhtml">The Storm Begins</a></li>
  <li><a href="part-002.xhtml#start">Into <em>the</em> Dark</a></li>
  <li><a href="part-003.xhtml">Morning</a></li>
</ol></nav>
<nav epub:type="landmarks" hidden="">
  <ol><li><a epub:type="bodymatter" href="part-001.xhtml">Start</a></li></ol>
</nav>"""

CHAPTER_1 = """<section epub:type="chapter"><h1>One</h1>
<p>It was a <em>dark</em> and <b>stormy</b> night.<a epub:type="noteref" href="#n1">1</a></p>
<script>document.write("never spoken")</script>
<p>The keeper&#8217;s lamp &amp; wick<br/>burned low.</p>
<span epub:type="pagebreak" id="page7" title="7">7</span>
<div><div>Nested <span>block</span> text.</div></div>
</section>"""
CHAPTER_2 = """<p id="epigraph">An epigraph before the anchor.</p>
<h2 id="start">Two</h2><p>The sea rose.</p><img src="../images/wave.png" alt="a wave"/>"""
CHAPTER_3 = """<h2>Three</h2><p>Dawn came over the rocks.</p>"""


def lighthouse_epub3(*, extra: dict[str, str | bytes] | None = None) -> bytes:
    """An EPUB 3 book: cover image, an image-only cover page and title page, the nav document in the
    spine, and three chapters whose TOC titles differ from their file names and headings."""
    manifest = """
    <item id="nav" href="text/nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="cover-img" href="images/cover.jpg" media-type="image/jpeg" properties="cover-image"/>
    <item id="wave" href="images/wave.png" media-type="image/png"/>
    <item id="css" href="style.css" media-type="text/css"/>
    <item id="cover" href="text/cover.xhtml" media-type="application/xhtml+xml"/>
    <item id="titlepage" href="text/title.xhtml" media-type="application/xhtml+xml"/>
    <item id="c1" href="text/part-001.xhtml" media-type="application/xhtml+xml"/>
    <item id="c2" href="text/part-002.xhtml" media-type="application/xhtml+xml"/>
    <item id="c3" href="text/part-003.xhtml" media-type="application/xhtml+xml"/>"""
    spine = """<itemref idref="cover"/><itemref idref="titlepage"/><itemref idref="nav"/>
    <itemref idref="c1"/><itemref idref="c2"/><itemref idref="c3"/>"""
    files: dict[str, str | bytes] = {
        "OEBPS/content.opf": opf3(manifest, spine),
        "OEBPS/text/nav.xhtml": xhtml(NAV),
        "OEBPS/images/cover.jpg": COVER_JPEG,
        "OEBPS/images/wave.png": b"\x89PNG\r\n\x1a\n",
        "OEBPS/style.css": "p { margin: 0 }",
        "OEBPS/text/cover.xhtml": xhtml('<div><img src="../images/cover.jpg" alt="Cover"/></div>'),
        "OEBPS/text/title.xhtml": xhtml('<section epub:type="titlepage"><img src="../images/cover.jpg"/></section>'),
        "OEBPS/text/part-001.xhtml": xhtml(CHAPTER_1),
        "OEBPS/text/part-002.xhtml": xhtml(CHAPTER_2),
        "OEBPS/text/part-003.xhtml": xhtml(CHAPTER_3),
    }
    files.update(extra or {})
    return epub(files)


XHTML11 = '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">'
NCX = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE ncx PUBLIC "-//NISO//DTD ncx 2005-1//EN" "http://www.daisy.org/z3986/2005/ncx-2005-1.dtd">
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">
  <head><meta name="dtb:uid" content="b2"/></head>
  <docTitle><text>Old Tales</text></docTitle>
  <navMap>
    <navPoint id="p1" playOrder="1"><navLabel><text>Part the First</text></navLabel><content src="Text/a.html"/>
      <navPoint id="p2" playOrder="2">
        <navLabel><text>The Miller</text></navLabel><content src="Text/a.html#miller"/>
      </navPoint>
    </navPoint>
    <navPoint id="p3" playOrder="3"><navLabel><text>The Smith</text></navLabel><content src="Text/b.html"/></navPoint>
  </navMap>
</ncx>"""


def old_tales_epub2() -> bytes:
    """An EPUB 2 book with an NCX only (nested, one entry into the middle of a file), XHTML 1.1
    doctypes, an HTML entity, and ``<meta name="cover">``."""
    opf = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="uid">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">
    <dc:title>Old Tales</dc:title><dc:creator opf:role="aut">Cyril Old</dc:creator>
    <dc:creator opf:role="edt">Dora Editor</dc:creator><dc:identifier id="uid">b2</dc:identifier>
    <meta name="cover" content="cover-image"/>
  </metadata>
  <manifest>
    <item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>
    <item id="cover-image" href="Images/front.jpeg" media-type="image/jpeg"/>
    <item id="a" href="Text/a.html" media-type="application/xhtml+xml"/>
    <item id="b" href="Text/b.html" media-type="application/xhtml+xml"/>
  </manifest>
  <spine toc="ncx"><itemref idref="a"/><itemref idref="b"/></spine>
</package>"""
    a = xhtml(
        "<h1>Part I</h1><p>Of mills&nbsp;and smiths.</p>"
        '<h2 id="miller">I. The Miller</h2><p>The miller ground corn.</p>',
        doctype=XHTML11,
    )
    b = xhtml("<h2>II. The Smith</h2><p>The smith beat iron.</p>", doctype=XHTML11)
    return epub(
        {
            "OEBPS/content.opf": opf,
            "OEBPS/toc.ncx": NCX,
            "OEBPS/Images/front.jpeg": COVER_JPEG,
            "OEBPS/Text/a.html": a,
            "OEBPS/Text/b.html": b,
        }
    )


def simple_epub(
    chapters: dict[str, str], *, nav: str | None = None, extra: dict[str, str | bytes] | None = None
) -> bytes:
    """An EPUB 3 with one spine file per entry of ``chapters`` (file name -> body) and an optional nav body."""
    manifest = "".join(
        f'<item id="f{i}" href="{name}" media-type="application/xhtml+xml"/>' for i, name in enumerate(chapters)
    )
    spine = "".join(f'<itemref idref="f{i}"/>' for i in range(len(chapters)))
    files: dict[str, str | bytes] = {f"OEBPS/{name}": xhtml(body) for name, body in chapters.items()}
    if nav is not None:
        manifest += '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        files["OEBPS/nav.xhtml"] = xhtml(nav)
    files["OEBPS/content.opf"] = opf3(manifest, spine)
    files.update(extra or {})
    return epub(files)
