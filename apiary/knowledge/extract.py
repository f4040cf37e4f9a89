"""Text out of an uploaded file, one maintained parser per format, kept in sections.

A section is a run of text with one citation: a PDF page, or the text under one heading of
a Markdown, HTML or DOCX document. Sections are joined with blank lines into the document's
plain text, and every section knows its offset in it, so a chunk's character span points
into one text a reader can reproduce. Parsing is synchronous (call it from a thread).

Uploads are hostile until read: a 100 KB DOCX or PDF can inflate to gigabytes, and plain
markup can ask a parser for millions of nodes. Every extractor works under
`ExtractionLimits` (from the knowledge settings): bytes inflated out of a zip archive or a
PDF's streams, the compression ratio and entry count of an archive, elements parsed, PDF
pages and characters extracted. Each is checked before or while the work it bounds is
done, never after, and a document past one fails with `ExtractionLimitExceeded` naming the
cap and the setting that raises it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import threading
import zipfile
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from apiary.knowledge.errors import (
    ExtractionError,
    ExtractionLimitExceeded,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from bs4.element import Tag

Format = Literal["text", "markdown", "html", "pdf", "docx", "csv", "json"]

# Formats are chosen by file extension: browsers and curl send unreliable content types.
FORMATS: dict[str, tuple[Format, str]] = {
    ".txt": ("text", "text/plain"),
    ".md": ("markdown", "text/markdown"),
    ".markdown": ("markdown", "text/markdown"),
    ".html": ("html", "text/html"),
    ".htm": ("html", "text/html"),
    ".pdf": ("pdf", "application/pdf"),
    ".docx": ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ".csv": ("csv", "text/csv"),
    ".json": ("json", "application/json"),
}
SUPPORTED = ", ".join(sorted(FORMATS))
_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    """What one document may cost to read; the defaults are the knowledge settings' own."""

    max_inflated_bytes: int = 64 * 1024 * 1024  # out of a zip archive, or a PDF's streams
    max_pdf_stream_bytes: int = 16 * 1024 * 1024  # one PDF stream, decoded
    max_compression_ratio: int = 100  # one archive entry's inflated / compressed size
    max_zip_entries: int = 1_000
    max_elements: int = 500_000  # XML elements of a DOCX, PDF content tokens, JSON values
    max_html_tags: int = 100_000  # BeautifulSoup keeps ~1.2 KB per tag
    max_pdf_pages: int = 2_000
    max_extracted_chars: int = 20_000_000

    @classmethod
    def of(cls, settings: object) -> ExtractionLimits:
        """The limits set on `settings` (the knowledge settings), field by field."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Section:
    text: str
    page: int | None = None  # 1-based, PDFs only
    heading: str | None = None  # "Setup > Linux": the headings above this text
    offset: int = 0  # where `text` starts in the document's plain text


@dataclass(frozen=True, slots=True)
class ExtractedDocument:
    format: Format
    text: str
    sections: tuple[Section, ...]


def detect_format(filename: str) -> tuple[Format, str]:
    """The format and canonical content type for a file name, or 415 naming what it got."""
    suffix = PurePosixPath(filename).suffix.lower()
    found = FORMATS.get(suffix)
    if found is None:
        shown = suffix or "no extension"
        raise UnsupportedMediaType(
            f"unsupported file type {shown!r} ({filename!r}); supported: {SUPPORTED}"
        )
    return found


def extract(
    content: bytes, filename: str, *, limits: ExtractionLimits | None = None
) -> ExtractedDocument:
    fmt, _ = detect_format(filename)
    meter = _Meter(limits or ExtractionLimits())
    pieces: list[Section] = []
    token = _METER.set(meter)  # for the PDF stream hook, which has no other way in
    try:
        with contextlib.closing(_EXTRACTORS[fmt](content, meter)) as extracting:
            for piece in extracting:
                meter.check()  # a cap a parser hit and swallowed still ends the document
                # Every section carries its heading path, and so does each of its chunks.
                meter.take_text(piece.heading or "")
                pieces.append(piece)
        meter.check()
    except ExtractionError:
        raise
    except Exception as error:  # parsers raise many types for a broken file
        if meter.exceeded is not None:
            raise ExtractionLimitExceeded(meter.exceeded) from None
        raise ExtractionError(
            f"could not read {fmt} file: {type(error).__name__}: {error}"
        ) from None
    finally:
        _METER.reset(token)
    # Extractors whose text can outgrow their input meter it as they go; the whole text
    # is weighed here for every format.
    whole = _Meter(meter.limits)
    for piece in pieces:
        whole.take_text(piece.text)
        whole.take_text(piece.heading or "")
    sections: list[Section] = []
    offset = 0
    carried = ""  # a heading with no text of its own joins the section after it
    for number, piece in enumerate(pieces):
        text = (carried + "\n" + piece.text.strip()).strip() if carried else piece.text.strip()
        carried = ""
        if not text:
            continue
        bare = text.lstrip("#").strip()  # a Markdown heading line, without its marks
        heading_only = piece.heading is not None and bare == piece.heading.split(" > ")[-1]
        if heading_only and "\n" not in text and number + 1 < len(pieces):
            carried = text
            continue
        if sections:
            offset += len(_SEPARATOR)
        sections.append(Section(text=text, page=piece.page, heading=piece.heading, offset=offset))
        offset += len(text)
    if not sections:
        raise ExtractionError(f"no text found in {filename!r}")
    return ExtractedDocument(
        format=fmt, text=_SEPARATOR.join(s.text for s in sections), sections=tuple(sections)
    )


_SETTING = "APIARY_KNOWLEDGE__"


class _Meter:
    """One document's running costs against its limits. The first cap crossed is kept in
    `exceeded`, so a parser that catches the exception cannot hide it (see `check`)."""

    def __init__(self, limits: ExtractionLimits) -> None:
        self.limits = limits
        self.inflated = 0
        self.elements = 0
        self.characters = 0
        self.exceeded: str | None = None

    def fail(self, reason: str) -> ExtractionLimitExceeded:
        if self.exceeded is None:
            self.exceeded = reason
        return ExtractionLimitExceeded(self.exceeded)

    def check(self) -> None:
        if self.exceeded is not None:
            raise ExtractionLimitExceeded(self.exceeded)

    def inflate(self, size: int, what: str) -> None:
        self.inflated += size
        cap = self.limits.max_inflated_bytes
        if self.inflated > cap:
            raise self.fail(
                f"{what}: more than {cap:,} bytes once decompressed, past the cap on a document's "
                f"decompressed size ({_SETTING}MAX_INFLATED_BYTES)"
            )

    def count_elements(self, count: int, what: str) -> None:
        self.elements += count
        cap = self.limits.max_elements
        if self.elements > cap:
            raise self.fail(
                f"{what} has more than {cap:,} elements, the cap on elements parsed "
                f"({_SETTING}MAX_ELEMENTS)"
            )

    def take_text(self, text: str) -> str:
        self.take(len(text))
        return text

    def take(self, characters: int) -> None:
        self.characters += characters
        cap = self.limits.max_extracted_chars
        if self.characters > cap:
            raise self.fail(
                f"the extracted text (with each section's headings) is longer than "
                f"{cap:,} characters, the cap ({_SETTING}MAX_EXTRACTED_CHARS)"
            )


_METER: ContextVar[_Meter | None] = ContextVar("apiary_extraction_meter", default=None)


class _TextWriter:
    """Lines written into one buffer and metered as they come: formats whose text repeats
    what they hold (a CSV's header on every row, a JSON path on every leaf) can write far
    more than they read, and a list of millions of small strings costs ~50 bytes each."""

    def __init__(self, meter: _Meter) -> None:
        self._meter = meter
        self._buffer = io.StringIO()
        self._empty = True

    def line(self, text: str) -> None:
        if self._empty:
            self._meter.take(len(text))
            self._empty = False
        else:
            self._meter.take(len(text) + 1)
            self._buffer.write("\n")
        self._buffer.write(text)

    @property
    def empty(self) -> bool:
        return self._empty

    def text(self) -> str:
        return self._buffer.getvalue()


def _decode(content: bytes) -> str:
    if b"\x00" in content[:8192]:
        raise ExtractionError("binary content where text was expected")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ExtractionError(f"not UTF-8 text (byte {error.start})") from None


def _text(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    yield Section(_decode(content))


_ATX_OPENING = re.compile(r"(#{1,6})(\s+)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    # Headings are tracked here rather than by LangChain's MarkdownHeaderTextSplitter, which
    # strips every line (breaking code blocks) and loses the offsets citations need.
    path: list[tuple[int, str]] = []
    lines = _TextWriter(meter)
    in_fence = False
    for line in _lines(_decode(content)):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _atx_heading(line)
        if heading is not None:
            yield Section(lines.text(), heading=_join(path))
            lines = _TextWriter(meter)
            level, title = heading
            path = [(lvl, text) for lvl, text in path if lvl < level]
            path.append((level, title))
        lines.line(line)
    yield Section(lines.text(), heading=_join(path))


def _atx_heading(line: str) -> tuple[int, str] | None:
    """The level and title of a `# Title #` line, as `^(#{1,6})\\s+(.+?)\\s*#*\\s*$` would
    match it. That pattern backtracks in cubic time over a run of spaces (a 5 KB line took
    minutes, holding the GIL), so the closing `\\s*#*\\s*` is stripped by hand instead."""
    opening = _ATX_OPENING.match(line)
    if opening is None:
        return None
    level = len(opening.group(1))
    rest = line[opening.end() :]
    if not rest:  # the title is then the last of two or more whitespace characters
        spaces = opening.group(2)
        return (level, spaces[-1]) if len(spaces) > 1 else None
    title = rest.rstrip().rstrip("#").rstrip()
    return level, title or rest[0]  # a title of only `#`s keeps its first


# Where str.splitlines breaks a line.
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> Iterator[str]:
    """`text.splitlines()`, one line at a time: the list of a 20 MiB file of short lines
    would hold millions of strings at ~50 bytes each."""
    start = 0
    for match in _LINE_BREAK.finditer(text):
        yield text[start : match.start()]
        start = match.end()
    if start < len(text):
        yield text[start:]


# A heading path is repeated on every chunk of its section (in its payload and in the text
# embedded), so a megabyte-long "title" would be stored and embedded once per chunk.
MAX_HEADING_CHARS = 1_000


def _join(path: list[tuple[int, str]]) -> str | None:
    heading = " > ".join(title for _, title in path)
    if len(heading) > MAX_HEADING_CHARS:
        heading = heading[: MAX_HEADING_CHARS - 1] + "…"
    return heading or None


_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_SKIP = {"script", "style", "noscript", "template", "head", "nav", "footer", "svg"}
_HTML_BLOCKS = {
    "p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section", "article",
    "main", "br", "dt", "dd", "dl", "figure", "figcaption", "header", "aside", "hr",
}  # fmt: skip


_HTML_TAG = re.compile(rb"<[A-Za-z]")


def _html(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    from bs4 import BeautifulSoup  # the parsers load when a document of theirs arrives
    from bs4.element import NavigableString, Tag

    # Counted before parsing: BeautifulSoup holds every tag as Python objects (490,000
    # tags, a 4 MB upload, took 567 MB), so a 20 MiB page of `<b>` would ask for gigabytes.
    cap = meter.limits.max_html_tags
    for count, _ in enumerate(_HTML_TAG.finditer(content), start=1):
        if count > cap:
            raise meter.fail(
                f"the HTML document has more than {cap:,} tags, the cap ({_SETTING}MAX_HTML_TAGS)"
            )
    soup = BeautifulSoup(content, "html.parser")
    path: list[tuple[int, str]] = []
    buffer: list[str] = []
    sections: list[Section] = []

    def flush() -> None:
        text = re.sub(r"[ \t]*\n[ \t\n]*", "\n", re.sub(r"[ \t\r\f\v]+", " ", "".join(buffer)))
        sections.append(Section(text, heading=_join(path)))
        buffer.clear()

    def walk(node: Tag) -> None:
        nonlocal path
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # not a comment, doctype or CDATA
                    buffer.append(str(child))
            elif isinstance(child, Tag):
                name = child.name.lower()
                if name in _HTML_SKIP:
                    continue
                if name in _HTML_HEADINGS:
                    flush()
                    level = _HTML_HEADINGS[name]
                    title = " ".join(child.get_text(" ").split())
                    path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
                    buffer.append(title + "\n")
                    continue
                if name in {"td", "th"}:
                    if buffer and not buffer[-1].endswith("\n"):
                        buffer.append(" | ")
                    walk(child)
                    continue
                block = name in _HTML_BLOCKS
                if block:
                    buffer.append("\n")
                walk(child)
                if block:
                    buffer.append("\n")

    walk(soup)
    flush()
    yield from sections


def _pdf(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import LimitReachedError

    _meter_pypdf_streams()
    max_pages = meter.limits.max_pdf_pages
    # pypdf walks the whole page tree to count pages: that walk is bounded near the cap.
    # A content stream's tokens are its elements, each a Python object (~125 bytes): a
    # 20 KB upload can inflate to 16 MiB of operators, millions of them at pypdf's default.
    with apply_configuration(
        page_tree_maximum_entries=2 * max_pages + 64,
        stream_parsing_work_maximum_count=meter.limits.max_elements,
    ):
        reader = PdfReader(io.BytesIO(content))
        meter.check()  # its xref recovery may have caught a cap an object stream hit
        if reader.is_encrypted:
            raise ExtractionError("the PDF is encrypted")
        try:
            pages = len(reader.pages)
        except LimitReachedError:
            pages = max_pages + 1
        if pages > max_pages:
            raise meter.fail(
                f"the PDF has more than {max_pages:,} pages, the cap ({_SETTING}MAX_PDF_PAGES)"
            )
        for number, page in enumerate(reader.pages, start=1):
            try:
                text = page.extract_text() or ""
            except LimitReachedError as error:
                if not str(error).startswith("Reached maximum number of tokens"):
                    raise
                meter.count_elements(meter.limits.max_elements + 1, f"page {number}'s content")
                raise
            _release_contents(page)
            meter.check()
            yield Section(meter.take_text(text), page=number)


def _release_contents(page: Any) -> None:
    """Drop the decoded copy pypdf caches on a page's content streams once its text is out:
    kept, every page read would stay in memory until the last one."""
    contents = page.get("/Contents")
    resolved = contents.get_object() if contents is not None else None
    for stream in resolved if isinstance(resolved, list) else [resolved]:
        target = stream.get_object() if stream is not None else None
        if target is not None and getattr(target, "decoded_self", None) is not None:
            target.decoded_self = None


_PYPDF_OUTPUT_LIMITS = (
    "zlib_maximum_output_length",
    "lzw_maximum_output_length",
    "run_length_maximum_output_length",
    "brotli_maximum_output_length",
    "jbig2_maximum_output_length",
    "array_based_stream_maximum_output_length",
)
_pypdf_metered = threading.Lock()


def _meter_pypdf_streams() -> None:
    """Count every PDF stream pypdf decodes against the document's inflate budget.

    pypdf caps each stream (75 MB by default) but not a document: decoded streams stay
    cached on the reader, so a few hundred pages of 70 MB each would all be kept. Every
    decode goes through `pypdf.filters.decode_stream_data`; wrapped once here, it lowers
    pypdf's own per-stream output caps to what is left of the budget of the document being
    read (found in `_METER`) and adds what came out. Outside `extract` it only passes through.
    """
    from pypdf import apply_configuration, filters
    from pypdf.errors import LimitReachedError

    with _pypdf_metered:
        original = filters.decode_stream_data
        if getattr(original, "apiary_metered", False):
            return

        def decode_stream_data(stream: Any) -> bytes:
            meter = _METER.get()
            if meter is None:
                return original(stream)
            remaining = meter.limits.max_inflated_bytes - meter.inflated
            if remaining <= 0:  # 0 means "no limit" to pypdf
                meter.inflate(1, "the PDF's streams")
            allowed = min(remaining, meter.limits.max_pdf_stream_bytes)
            with apply_configuration(None, **dict.fromkeys(_PYPDF_OUTPUT_LIMITS, allowed)):
                try:
                    data = original(stream)
                except LimitReachedError as error:
                    if not str(error).startswith("Limit reached while decompressing"):
                        raise
                    if allowed == remaining:
                        meter.inflate(remaining + 1, "the PDF's streams")
                    raise meter.fail(
                        f"a PDF stream decompresses to more than {allowed:,} bytes, the cap "
                        f"on one stream ({_SETTING}MAX_PDF_STREAM_BYTES)"
                    ) from None
            meter.inflate(len(data), "the PDF's streams")
            return data

        decode_stream_data.apiary_metered = True  # type: ignore[attr-defined]
        filters.decode_stream_data = decode_stream_data


def _docx(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.table import Table

    # python-docx reads every part of the package and parses its XML whole: the archive
    # is opened and inflated once here first, under the caps, so what it reads is bounded.
    with _open_zip(content, meter) as archive:
        _inflate_all(archive, meter)
    document = docx.Document(io.BytesIO(content))
    # `Paragraph.style` scans every style of the document on each call (a second per few
    # dozen paragraphs): names are looked up once, by the id the paragraph carries.
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default_name = (default.name if default is not None else None) or ""
    style_names = {
        style.style_id: style.name or ""
        for style in document.styles
        if style.type == WD_STYLE_TYPE.PARAGRAPH
    }
    path: list[tuple[int, str]] = []
    lines = _TextWriter(meter)
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                # A merged cell is listed once per grid column it spans: text repeats.
                lines.line(" | ".join(cell.text.strip() for cell in row.cells))
            continue
        level = _docx_heading_level(style_names.get(block._p.style or "", default_name))
        if level is not None and block.text.strip():
            yield Section(lines.text(), heading=_join(path))
            lines = _TextWriter(meter)
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, block.text.strip())]
        lines.line(block.text)
    yield Section(lines.text(), heading=_join(path))


_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"
_RATIO_FLOOR = 1024 * 1024  # entries smaller than this may compress as well as they like
_READ_CHUNK = 1024 * 1024


def _open_zip(content: bytes, meter: _Meter) -> zipfile.ZipFile:
    """The archive, once its entry count, declared sizes and ratios are within the caps."""
    limits = meter.limits
    # Counted in the raw bytes before zipfile builds an object per entry: the central
    # directory of a 20 MiB upload can list hundreds of thousands. Each entry starts with
    # this signature, so the count is an upper bound.
    entries = content.count(_ZIP_CENTRAL_ENTRY)
    if entries > limits.max_zip_entries:
        raise meter.fail(
            f"the archive has {entries:,} entries, past the cap of {limits.max_zip_entries:,} "
            f"({_SETTING}MAX_ZIP_ENTRIES)"
        )
    archive = zipfile.ZipFile(io.BytesIO(content))
    try:
        declared = sum(info.file_size for info in archive.infolist())
        if declared > limits.max_inflated_bytes:
            meter.inflate(declared, "the archive")
        for info in archive.infolist():
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
                raise meter.fail(
                    f"{info.filename} inflates to {ratio:,.0f} times its compressed size, "
                    f"past the cap of {limits.max_compression_ratio:,} "
                    f"({_SETTING}MAX_COMPRESSION_RATIO)"
                )
    except BaseException:
        archive.close()
        raise
    return archive


_XML_PARTS = (".xml", ".rels")
_XML_DECLARATIONS = (b"<!DOCTYPE", b"<!ENTITY")


def _inflate_all(archive: zipfile.ZipFile, meter: _Meter) -> None:
    """Inflate every entry in bounded chunks, counting the bytes that actually come out
    (an archive's declared sizes are only its word) and the elements of its XML parts.
    An XML part that declares a DTD is refused: OOXML never has one, and its entities are
    what "billion laughs" expands."""
    for info in archive.infolist():
        xml = info.filename.lower().endswith(_XML_PARTS)
        tail = b""
        with archive.open(info) as entry:
            while chunk := entry.read(_READ_CHUNK):
                meter.inflate(len(chunk), info.filename)
                if not xml:
                    continue
                window = tail + chunk
                if any(marker in window for marker in _XML_DECLARATIONS):
                    raise meter.fail(
                        f"{info.filename} declares a DTD; DOCX parts never need one and "
                        "entities are not expanded"
                    )
                # Start tags: every "<" but end tags, comments, CDATA and declarations.
                opened = chunk.count(b"<") - chunk.count(b"</") - chunk.count(b"<!")
                meter.count_elements(opened - chunk.count(b"<?"), "the DOCX's XML")
                tail = chunk[-16:]


def _docx_heading_level(style: str) -> int | None:
    if style == "Title":
        return 0
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


def _csv(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    # Each row is written out with its column names, so a retrieved row reads on its own
    # (and a wide header repeated on every row is why the text is metered as it grows).
    reader = csv.reader(io.StringIO(_decode(content)))
    header = next(reader, None)
    if header is None:
        return
    lines = _TextWriter(meter)
    for row in reader:
        if any(value.strip() for value in row):
            lines.line(
                "; ".join(
                    f"{name.strip()}: {value.strip()}"
                    for name, value in zip(header, row, strict=False)
                )
            )
    yield Section(", ".join(header) if lines.empty else lines.text())


# A JSON string, escapes included, unrolled so that a long one costs no backtracking. The
# closing quote is optional: an unterminated string would otherwise fail and be retried from
# every quote after it, in quadratic time (a 100 KB run of `\"` took a minute).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')


def _json(content: bytes, meter: _Meter) -> Generator[Section, None, None]:
    # Counted before parsing, outside strings: every value but the first follows a comma
    # or opens a container, and each costs a Python object (an empty list is 56 bytes).
    structure = _JSON_STRING.sub(b"", content)
    values = 1 + sum(structure.count(mark) for mark in (b",", b"[", b"{"))
    del structure
    if values > meter.limits.max_elements:
        meter.count_elements(values, "the JSON document")
    try:
        value = json.loads(_decode(content))
    except json.JSONDecodeError as error:
        raise ExtractionError(f"invalid JSON: {error}") from None
    # One "path: value" line per leaf, so a chunk of it is still self-describing.
    lines = _TextWriter(meter)
    for path, leaf in _leaves(value, ""):
        lines.line(f"{path}: {leaf}")
    yield Section(lines.text())


def _leaves(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path or "value", "null" if value is None else str(value)


_EXTRACTORS: dict[Format, Callable[[bytes, _Meter], Generator[Section, None, None]]] = {
    "text": _text,
    "markdown": _markdown,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "csv": _csv,
    "json": _json,
}
