"""Extraction and splitting over the test corpus: every format read, spans exact, citations kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiary.knowledge.chunking import split
from apiary.knowledge.errors import ExtractionError, UnsupportedMediaType
from apiary.knowledge.extract import detect_format, extract
from tests.knowledge.documents import docx_bytes, pdf_bytes

CORPUS = Path(__file__).with_name("corpus")
DOCUMENTS = sorted(CORPUS.iterdir())


def test_the_corpus_covers_every_format() -> None:
    suffixes = {p.suffix for p in DOCUMENTS}
    assert suffixes == {".md", ".txt", ".html", ".pdf", ".docx", ".csv", ".json"}
    assert 20 <= len(DOCUMENTS) <= 50


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_chunk_spans_point_into_the_extracted_text(path: Path) -> None:
    document = extract(path.read_bytes(), path.name)
    chunks = split(document, chunk_size=200, chunk_overlap=40)
    assert chunks
    for chunk in chunks:
        assert document.text[chunk.char_start : chunk.char_end] == chunk.text
        assert len(chunk.text) <= 200


def test_pdf_chunks_keep_their_page() -> None:
    content = pdf_bytes([["Alpha page text."], ["Bravo page text."], ["Charlie (third) page."]])
    document = extract(content, "three.pdf")
    chunks = split(document, chunk_size=800, chunk_overlap=0)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Alpha page text."),
        (2, "Bravo page text."),
        (3, "Charlie (third) page."),
    ]


def test_markdown_and_html_chunks_keep_their_headings() -> None:
    markdown = (
        b"# Guide\n\nIntro.\n\n## Install\n\n```\n# not a heading\n```\n\n### Linux\n\napt it.\n"
    )
    sections = [
        c.section for c in split(extract(markdown, "g.md"), chunk_size=800, chunk_overlap=0)
    ]
    assert sections == ["Guide", "Guide > Install", "Guide > Install > Linux"]
    html = b"<h1>Guide</h1><p>Intro.</p><h2>Install</h2><p>Run it.</p><h2>Use</h2><p>Go.</p>"
    chunks = split(extract(html, "g.html"), chunk_size=800, chunk_overlap=0)
    assert [(c.section, c.text.splitlines()[-1]) for c in chunks] == [
        ("Guide", "Intro."),
        ("Guide > Install", "Run it."),
        ("Guide > Use", "Go."),
    ]


def test_docx_headings_and_tables() -> None:
    content = docx_bytes(
        [("h1", "Policy"), ("p", "Intro."), ("h2", "Limits"), ("table", [["a", "b"], ["1", "2"]])]
    )
    chunks = split(extract(content, "p.docx"), chunk_size=800, chunk_overlap=0)
    assert chunks[-1].section == "Policy > Limits"
    assert "1 | 2" in chunks[-1].text


def test_html_drops_scripts_and_styles() -> None:
    html = b"<html><head><style>p{}</style></head><body><script>steal()</script><p>Kept.</p></body>"
    assert extract(html, "x.html").text == "Kept."


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "could not read pdf"),
        ("broken.docx", b"PK\x03\x04 not a zip archive", "could not read docx"),
        ("broken.json", b'{"a": ', "invalid JSON"),
        ("binary.txt", b"\x00\x01\x02\x03", "binary content"),
        ("latin1.md", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.txt", b"   \n ", "no text found"),
    ],
)
def test_unreadable_files_raise_a_reason(filename: str, content: bytes, reason: str) -> None:
    with pytest.raises(ExtractionError, match=reason):
        extract(content, filename)


def test_unsupported_types_are_named() -> None:
    with pytest.raises(UnsupportedMediaType, match=r"'\.exe'.*supported: \.csv"):
        detect_format("setup.exe")
    with pytest.raises(UnsupportedMediaType, match="no extension"):
        detect_format("README")
    assert detect_format("Report.PDF") == ("pdf", "application/pdf")
