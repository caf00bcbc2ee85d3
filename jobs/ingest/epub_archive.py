"""The EPUB container, read safely: a zip within limits, no unsafe member names, XML without
entity declarations or external references, and no DRM.

An EPUB is a zip: ``META-INF/container.xml`` names the package document (OPF), which lists the
manifest, the spine (reading order) and the metadata. Nothing here extracts to disk; members are
looked up by name and read into memory within :class:`~jobs.ingest.limits.IngestLimits`.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from jobs.errors import ErrorCode
from jobs.ingest.errors import BookRejected
from jobs.ingest.limits import IngestLimits

CONTAINER = "META-INF/container.xml"
ENCRYPTION = "META-INF/encryption.xml"
# Font obfuscation (IDPF's and Adobe's algorithms) scrambles embedded fonts only; it is not DRM.
FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
_DRIVE = re.compile(r"^[A-Za-z]:")
# The zip's end-of-central-directory record (and its ZIP64 locator), read before zipfile parses the directory.
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_END_SEARCH = _END.size + 0xFFFF  # the record ends the file, after a comment of up to 64 KiB
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_MAX_ENTRY_BYTES = 1024  # a central directory entry averaging more than this is not an EPUB's


def local(tag: object) -> str:
    """An element's tag without its namespace: ``{http://www.idpf.org/2007/opf}item`` -> ``item``."""
    return str(tag).rsplit("}", 1)[-1]


def parse_xml(raw: bytes, member: str) -> Element:
    """Parse one XML member; entity declarations and external references are refused, a DOCTYPE
    without them is allowed (EPUB 2 documents carry one) and never fetched."""
    try:
        root: Element = defusedxml.ElementTree.fromstring(
            raw, forbid_dtd=False, forbid_entities=True, forbid_external=True
        )
        return root
    except defusedxml.DefusedXmlException as exc:
        raise BookRejected(
            f"unsafe XML in {member}: it declares entities or references external resources ({type(exc).__name__}), "
            "which are refused"
        ) from None
    except ParseError as exc:
        raise BookRejected(f"not a readable EPUB: {member} is not well-formed XML ({exc})") from None


def _check_directory(data: bytes, limits: IngestLimits) -> None:
    """Refuse a zip whose central directory declares too many members *before* zipfile parses it
    (zipfile builds an object per entry, so a directory of millions of entries would cost gigabytes)."""
    end = data.rfind(_END_SIGNATURE, max(0, len(data) - _END_SEARCH))
    if end < 0 or end + _END.size > len(data):
        return  # not a zip: zipfile says so
    entries, directory_size = _END.unpack_from(data, end)[4:6]
    locator = end - _ZIP64_LOCATOR.size
    if (entries == 0xFFFF or directory_size == 0xFFFFFFFF) and locator >= 0:
        signature, _, offset, _ = _ZIP64_LOCATOR.unpack_from(data, locator)
        if signature == _ZIP64_LOCATOR_SIGNATURE and data[offset : offset + 4] == _ZIP64_END_SIGNATURE:
            entries, directory_size = struct.unpack_from("<QQ", data, offset + 32)
    if entries > limits.max_members or directory_size > limits.max_members * _MAX_ENTRY_BYTES:
        raise BookRejected(
            f"the zip declares {entries:,} members in a {directory_size:,}-byte directory, over the limit "
            f"max_members={limits.max_members:,}"
        )


class EpubArchive:
    """The zip of an EPUB, checked against the limits when opened; raises :class:`BookRejected`."""

    def __init__(self, data: bytes, limits: IngestLimits) -> None:
        _check_directory(data, limits)
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error):
            raise BookRejected("not an EPUB: the file is not a zip archive") from None
        except NotImplementedError as exc:  # e.g. "zip file version 6.3" from a newer or corrupt zip
            raise BookRejected(f"not a readable EPUB: the zip needs a feature that is not supported ({exc})") from None
        self.limits = limits
        infos = [info for info in self._zip.infolist() if not info.is_dir()]
        self._check_sizes(infos)
        self._members = {info.filename: info for info in infos}
        self._folded = {name.lower(): name for name in self._members}

    def _check_sizes(self, infos: list[zipfile.ZipInfo]) -> None:
        limits = self.limits
        if len(infos) > limits.max_members:
            raise BookRejected(f"the zip has {len(infos):,} members, over the limit max_members={limits.max_members:,}")
        for info in infos:
            name = info.filename.replace("\\", "/")
            if name.startswith("/") or _DRIVE.match(name) or ".." in name.split("/") or "\x00" in name:
                raise BookRejected(
                    f"unsafe member name in the zip: {info.filename!r} (absolute paths and '..' are refused)"
                )
            if info.file_size > limits.max_member_bytes:
                raise BookRejected(
                    f"zip member {info.filename} is {info.file_size:,} bytes uncompressed, over the limit "
                    f"max_member_bytes={limits.max_member_bytes:,}"
                )
            if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_ratio * info.compress_size:
                ratio = info.file_size / max(info.compress_size, 1)
                raise BookRejected(
                    f"zip member {info.filename} expands {ratio:,.0f} times ({info.compress_size:,} to "
                    f"{info.file_size:,} bytes), over the limit max_ratio={limits.max_ratio:g}: a zip bomb?"
                )
        total = sum(info.file_size for info in infos)
        if total > limits.max_uncompressed_bytes:
            raise BookRejected(
                f"the zip holds {total:,} bytes uncompressed, over the limit "
                f"max_uncompressed_bytes={limits.max_uncompressed_bytes:,}"
            )

    def find(self, name: str) -> str | None:
        """The member called ``name`` (exactly, else ignoring case as some tools get it wrong), or None."""
        if name in self._members:
            return name
        return self._folded.get(name.lower())

    def read(self, name: str) -> bytes:
        """The bytes of member ``name`` (use :meth:`find` first); corrupt or encrypted members are refused."""
        info = self._members[name]
        if info.flag_bits & 0x1:
            raise BookRejected(
                f"the EPUB is DRM-protected: the zip encrypts {name} with a password", code=ErrorCode.BOOK_DRM
            )
        try:
            with self._zip.open(info) as member:
                return member.read(self.limits.max_member_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error) as exc:
            raise BookRejected(f"not a readable EPUB: zip member {name} is corrupt ({exc})") from None
        except NotImplementedError as exc:
            raise BookRejected(
                f"not a readable EPUB: zip member {name} uses an unsupported compression ({exc})"
            ) from None

    def check_not_encrypted(self) -> None:
        """Refuse DRM: any ``META-INF/encryption.xml`` entry other than font obfuscation."""
        name = self.find(ENCRYPTION)
        if name is None:
            return
        for data in parse_xml(self.read(name), name).iter():
            if local(data.tag) != "EncryptedData":
                continue
            algorithms = {m.get("Algorithm", "") for m in data.iter() if local(m.tag) == "EncryptionMethod"}
            if algorithms and algorithms <= FONT_OBFUSCATION:
                continue
            refs = [r.get("URI", "?") for r in data.iter() if local(r.tag) == "CipherReference"] or ["a member"]
            raise BookRejected(f"the EPUB is DRM-protected: {ENCRYPTION} encrypts {refs[0]}", code=ErrorCode.BOOK_DRM)

    def container_rootfile(self) -> str:
        """The path of the package document (OPF) that ``META-INF/container.xml`` names."""
        name = self.find(CONTAINER)
        if name is None:
            raise BookRejected(f"not an EPUB: the zip has no {CONTAINER}")
        for rootfile in parse_xml(self.read(name), name).iter():
            if local(rootfile.tag) == "rootfile" and rootfile.get("full-path"):
                media_type = rootfile.get("media-type", "application/oebps-package+xml")
                if media_type == "application/oebps-package+xml":
                    return str(rootfile.get("full-path"))
        raise BookRejected(f"not an EPUB: {CONTAINER} names no package document (rootfile full-path)")
