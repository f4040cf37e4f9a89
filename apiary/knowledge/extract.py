"""Text out of an uploaded file, one maintained parser per format, kept in sections.

A section is a run of text with one citation: a PDF page, or the text under one heading of
a Markdown, HTML or DOCX document. Sections are joined with blank lines into the document's
plain text, and every section knows its offset in it, so a chunk's character span points
into one text a reader can reproduce. Parsing is synchronous (call it from a thread).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from apiary.knowledge.errors import ExtractionError, UnsupportedMediaType

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


def extract(content: bytes, filename: str) -> ExtractedDocument:
    fmt, _ = detect_format(filename)
    try:
        pieces = list(_EXTRACTORS[fmt](content))
    except ExtractionError:
        raise
    except Exception as error:  # parsers raise many types for a broken file
        raise ExtractionError(
            f"could not read {fmt} file: {type(error).__name__}: {error}"
        ) from None
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


def _decode(content: bytes) -> str:
    if b"\x00" in content[:8192]:
        raise ExtractionError("binary content where text was expected")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ExtractionError(f"not UTF-8 text (byte {error.start})") from None


def _text(content: bytes) -> Iterator[Section]:
    yield Section(_decode(content))


_ATX_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(content: bytes) -> Iterator[Section]:
    # Headings are tracked here rather than by LangChain's MarkdownHeaderTextSplitter, which
    # strips every line (breaking code blocks) and loses the offsets citations need.
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False
    for line in _decode(content).splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _ATX_HEADING.match(line)
        if match:
            yield Section("\n".join(lines), heading=_join(path))
            lines = []
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level]
            path.append((level, match.group(2)))
        lines.append(line)
    yield Section("\n".join(lines), heading=_join(path))


def _join(path: list[tuple[int, str]]) -> str | None:
    return " > ".join(title for _, title in path) or None


_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_HTML_SKIP = {"script", "style", "noscript", "template", "head", "nav", "footer", "svg"}
_HTML_BLOCKS = {
    "p", "div", "li", "ul", "ol", "pre", "blockquote", "table", "tr", "section", "article",
    "main", "br", "dt", "dd", "dl", "figure", "figcaption", "header", "aside", "hr",
}  # fmt: skip


def _html(content: bytes) -> Iterator[Section]:
    from bs4 import BeautifulSoup  # the parsers load when a document of theirs arrives
    from bs4.element import NavigableString, Tag

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


def _pdf(content: bytes) -> Iterator[Section]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(content))
    if reader.is_encrypted:
        raise ExtractionError("the PDF is encrypted")
    for number, page in enumerate(reader.pages, start=1):
        yield Section(page.extract_text() or "", page=number)


def _docx(content: bytes) -> Iterator[Section]:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(content))
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                lines.append(" | ".join(cell.text.strip() for cell in row.cells))
            continue
        style = block.style.name if block.style is not None and block.style.name else ""
        level = _docx_heading_level(style)
        if level is not None and block.text.strip():
            yield Section("\n".join(lines), heading=_join(path))
            lines = []
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, block.text.strip())]
        lines.append(block.text)
    yield Section("\n".join(lines), heading=_join(path))


def _docx_heading_level(style: str) -> int | None:
    if style == "Title":
        return 0
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


def _csv(content: bytes) -> Iterator[Section]:
    # Each row is written out with its column names, so a retrieved row reads on its own.
    reader = csv.reader(io.StringIO(_decode(content)))
    header = next(reader, None)
    if header is None:
        return
    lines = [
        "; ".join(
            f"{name.strip()}: {value.strip()}" for name, value in zip(header, row, strict=False)
        )
        for row in reader
        if any(value.strip() for value in row)
    ]
    yield Section("\n".join(lines) if lines else ", ".join(header))


def _json(content: bytes) -> Iterator[Section]:
    try:
        value = json.loads(_decode(content))
    except json.JSONDecodeError as error:
        raise ExtractionError(f"invalid JSON: {error}") from None
    # One "path: value" line per leaf, so a chunk of it is still self-describing.
    yield Section("\n".join(f"{path}: {leaf}" for path, leaf in _leaves(value, "")))


def _leaves(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path or "value", "null" if value is None else str(value)


_EXTRACTORS = {
    "text": _text,
    "markdown": _markdown,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "csv": _csv,
    "json": _json,
}
