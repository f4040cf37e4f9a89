"""Hostile documents: decompression bombs and expansion bombs end `failed`, naming the cap.

Each bomb is a small upload (tens of KB to a few hundred) that would inflate or expand
to tens of megabytes or more. It must fail with a reason naming the cap and the setting
that raises it, in the document's status and its event stream, while the knowledge base
keeps what it had, the ingestion worker goes on, and another tenant's search answers
without the process's peak memory growing by 100 MiB.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiary.config import KnowledgeSettings
from apiary.knowledge.chunking import split
from apiary.knowledge.errors import ExtractionError, ExtractionLimitExceeded
from apiary.knowledge.extract import ExtractionLimits, extract
from apiary.runtime import Runtime
from tests.factories import TenantFixture, make_tenant
from tests.knowledge.bombs import (
    docx_bomb,
    docx_element_bomb,
    docx_with_entities,
    docx_with_entries,
    pdf_bomb,
)
from tests.knowledge.documents import docx_bytes, pdf_bytes
from tests.knowledge.helpers import BASES, create_base, ingested, search, upload
from tests.sse import parse_sse

CORPUS = Path(__file__).with_name("corpus")
MiB = 1024 * 1024


# --- every extractor under its caps ---------------------------------------------------


def test_a_docx_bomb_is_refused_before_it_inflates() -> None:
    bomb = docx_bomb(40_000_000)
    assert len(bomb) < 200_000
    started = time.monotonic()
    with pytest.raises(ExtractionLimitExceeded, match="MAX_COMPRESSION_RATIO") as failure:
        extract(bomb, "report.docx")
    assert "word/document.xml inflates to" in str(failure.value)
    assert time.monotonic() - started < 2


def test_a_docx_within_the_ratio_is_caught_while_it_inflates_in_bounded_memory() -> None:
    """Past every check made on the archive's word (its ratio, its declared sizes), the part
    is inflated chunk by chunk and its elements counted: refused long before python-docx
    would build a tree of a million elements (about 280 MiB) from it."""
    bomb = docx_element_bomb(16_000_000)
    assert len(bomb) < 1_000_000
    gc.collect()
    baseline = _reset_peak_rss()
    with pytest.raises(ExtractionLimitExceeded, match="MAX_ELEMENTS") as failure:
        extract(bomb, "report.docx")
    growth = _peak_rss() - baseline
    assert "the DOCX's XML has more than 500,000 elements" in str(failure.value)
    assert growth < 50 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_a_docx_past_the_inflate_cap_fails_even_at_an_honest_ratio() -> None:
    honest = docx_bytes([("p", f"Paragraph {n} of an ordinary report.") for n in range(2_000)])
    assert extract(honest, "report.docx").text.startswith("Paragraph 0")
    with pytest.raises(ExtractionLimitExceeded, match="MAX_INFLATED_BYTES"):
        extract(honest, "report.docx", limits=ExtractionLimits(max_inflated_bytes=100_000))


def test_a_docx_with_too_many_xml_elements_fails() -> None:
    report = docx_bytes([("p", f"Line {n}.") for n in range(300)])
    with pytest.raises(ExtractionLimitExceeded, match=r"more than 1,000 elements.*MAX_ELEMENTS"):
        extract(report, "report.docx", limits=ExtractionLimits(max_elements=1_000))


def test_a_zip_with_many_entries_is_refused_before_it_is_opened() -> None:
    crowded = docx_with_entries(5_000)
    with pytest.raises(ExtractionLimitExceeded, match=r"5,0\d\d entries.*MAX_ZIP_ENTRIES"):
        extract(crowded, "crowded.docx")
    # Beside the cap, the same layout reads: the entries are not the problem, their number is.
    assert extract(docx_with_entries(10), "few.docx").text == "A small honest document."


def test_a_docx_declaring_entities_is_refused() -> None:
    with pytest.raises(ExtractionLimitExceeded, match=r"word/document\.xml declares a DTD"):
        extract(docx_with_entities(), "laughs.docx")


def test_a_pdf_stream_bomb_is_cut_at_the_stream_cap() -> None:
    bomb = pdf_bomb(40_000_000)  # under pypdf's own 75 MB cap per stream
    assert len(bomb) < 100_000
    with pytest.raises(ExtractionLimitExceeded, match="MAX_PDF_STREAM_BYTES") as failure:
        extract(bomb, "manual.pdf")
    assert "more than 16,777,216 bytes" in str(failure.value)


def test_a_pdf_stream_of_millions_of_operators_is_cut_at_the_element_cap() -> None:
    # 10 MiB of `0 0 m` (under the stream cap) from a ~15 KB upload: 1.7 million operators
    # that pypdf would hold as Python objects, ~125 bytes each.
    operators = pdf_bomb(10 * MiB, filler=b"0 0 m\n")
    assert len(operators) < 30_000
    with pytest.raises(
        ExtractionLimitExceeded, match=r"page 1's content has more than 500,000 elements"
    ):
        extract(operators, "drawing.pdf")


def test_pdf_streams_together_are_capped_per_document() -> None:
    pages = pdf_bomb(3 * MiB, pages=4)  # each stream under the stream cap, 12 MiB in all
    limits = ExtractionLimits(max_inflated_bytes=8 * MiB)
    with pytest.raises(ExtractionLimitExceeded, match=r"the PDF.s streams.*MAX_INFLATED_BYTES"):
        extract(pages, "manual.pdf", limits=limits)
    assert len(extract(pages, "manual.pdf").sections) == 4


def test_a_pdf_past_the_page_cap_fails() -> None:
    manual = pdf_bytes([[f"Page {n}."] for n in range(6)])
    with pytest.raises(ExtractionLimitExceeded, match=r"more than 5 pages.*MAX_PDF_PAGES"):
        extract(manual, "manual.pdf", limits=ExtractionLimits(max_pdf_pages=5))


def test_a_pdf_past_the_character_cap_fails() -> None:
    manual = pdf_bytes([["x" * 80] * 40 for _ in range(5)])
    with pytest.raises(ExtractionLimitExceeded, match="MAX_EXTRACTED_CHARS"):
        extract(manual, "manual.pdf", limits=ExtractionLimits(max_extracted_chars=5_000))


def test_a_csv_whose_header_repeats_on_every_row_is_capped_as_it_grows() -> None:
    # 600 KB in; each row writes out 2,000 column names: 25 MB of text by the 250th row.
    header = ",".join(f"column number {n:04} with a long descriptive name" for n in range(2_000))
    row = "x" + "," * 1_999
    wide = "\n".join([header, *[row] * 250]).encode()
    assert len(wide) < 700_000
    with pytest.raises(ExtractionLimitExceeded, match=r"20,000,000 characters.*EXTRACTED_CHARS"):
        extract(wide, "wide.csv")


def test_headings_repeated_on_every_section_count_toward_the_character_cap() -> None:
    # ~300 KB in: a 990-character title above 25,000 short sections, each of which carries
    # it (and so does every chunk of each): 25 million characters of headings.
    outline = f"# {'T' * 990}\n" + "".join(f"## P{n}\nx\n" for n in range(25_000))
    assert len(outline) < 300_000
    with pytest.raises(ExtractionLimitExceeded, match=r"each section's headings.*EXTRACTED_CHARS"):
        extract(outline.encode(), "outline.md")


def test_a_markdown_heading_full_of_spaces_is_read_in_linear_time() -> None:
    # The heading pattern used to backtrack in cubic time here: 2,000 spaces took ~20 s,
    # holding the GIL (the whole server), and 20,000 would take hours.
    title = "Setup" + " " * 2_000 + "notes"
    started = time.monotonic()
    document = extract(f"# {title} ##\nBody text.\n".encode(), "spaces.md")
    assert time.monotonic() - started < 1
    assert document.sections[0].heading == title[:999] + "…"  # headings are cut at 1,000


def test_a_long_heading_is_cut_before_every_chunk_repeats_it() -> None:
    title = "T" * 100_000
    body = "\n\n".join(f"Paragraph {n} of the section under a very long title." for n in range(40))
    document = extract(f"# {title}\n{body}\n".encode(), "long.md")
    chunks = split(document, chunk_size=200, chunk_overlap=0)
    assert len(chunks) >= 10
    for chunk in chunks:
        assert chunk.section == "T" * 999 + "…"
        assert len(chunk.indexed_text) <= 1_000 + 1 + 200


def test_markdown_of_millions_of_short_lines_is_read_in_bounded_memory() -> None:
    lines = b"ab\n" * (3 * MiB)  # 9 MiB: 3 million lines, ~50 bytes each as a list of strings
    gc.collect()
    baseline = _reset_peak_rss()
    document = extract(lines, "lines.md")
    growth = _peak_rss() - baseline
    assert len(document.text) == len(lines) - 1
    assert growth < 100 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_html_with_too_many_tags_fails_before_parsing() -> None:
    tags = b"<p>" + b"<i>x</i>" * 120_000 + b"</p>"  # 1 MB: ~140 MB as a BeautifulSoup tree
    started = time.monotonic()
    with pytest.raises(ExtractionLimitExceeded, match=r"more than 100,000 tags.*MAX_HTML_TAGS"):
        extract(tags, "tags.html")
    assert time.monotonic() - started < 2  # refused before BeautifulSoup builds a tree
    assert extract(b"<p>Plain <b>bold</b> words.</p>", "ok.html").text == "Plain bold words."


def test_json_with_too_many_values_fails_and_strings_do_not_count() -> None:
    with pytest.raises(ExtractionLimitExceeded, match="JSON document has more than 500,000"):
        extract(b"[" + b"0," * 600_000 + b"0]", "values.json")
    prose = b'{"text": "' + b"a, [b], {c}, " * 100_000 + b'"}'
    assert extract(prose, "prose.json").text.startswith("text: a, [b], {c}")


def test_an_unterminated_json_string_of_escapes_is_refused_in_linear_time() -> None:
    started = time.monotonic()
    with pytest.raises(ExtractionError, match="invalid JSON"):
        extract(b'["' + b'\\"' * 50_000, "broken.json")
    assert time.monotonic() - started < 1


def test_the_extractor_defaults_are_the_settings_defaults() -> None:
    assert ExtractionLimits.of(KnowledgeSettings()) == ExtractionLimits()


# --- over the API: failed with the reason, nothing else lost ---------------------------


async def _events(
    client: httpx.AsyncClient, tenant: TenantFixture, kb_id: str, doc_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{BASES}/{kb_id}/documents/{doc_id}/events", headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


async def _document(
    client: httpx.AsyncClient, tenant: TenantFixture, kb_id: str, doc_id: str
) -> dict[str, Any]:
    response = await client.get(f"{BASES}/{kb_id}/documents/{doc_id}", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


BOMBS = [
    pytest.param("report.docx", lambda: docx_bomb(40_000_000), "MAX_COMPRESSION_RATIO", id="docx"),
    pytest.param(
        "elements.docx", lambda: docx_element_bomb(16_000_000), "MAX_ELEMENTS", id="docx-inflated"
    ),
    pytest.param("manual.pdf", lambda: pdf_bomb(40_000_000), "MAX_PDF_STREAM_BYTES", id="pdf"),
    pytest.param("crowded.docx", lambda: docx_with_entries(1_500), "MAX_ZIP_ENTRIES", id="zip"),
    pytest.param("laughs.docx", docx_with_entities, "declares a DTD", id="entities"),
]


@pytest.mark.both_databases
@pytest.mark.parametrize(("filename", "make", "reason"), BOMBS)
async def test_a_bomb_upload_fails_with_the_cap_and_the_base_keeps_its_documents(
    client: httpx.AsyncClient, runtime: Runtime, filename: str, make: Any, reason: str
) -> None:
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    oncall = await upload(
        client, tenant.admin, kb["id"], "oncall.md", (CORPUS / "oncall.md").read_bytes()
    )
    await ingested(runtime)

    bomb = await upload(client, tenant.admin, kb["id"], filename, make())
    events = await _events(client, tenant, kb["id"], bomb["id"])
    assert [e["event"] for e in events] == ["queued", "extracting", "failed"]
    failure = events[-1]["data"]["reason"]
    assert reason in failure
    document = await _document(client, tenant, kb["id"], bomb["id"])
    assert document["status"] == "failed"
    assert document["error"] == failure
    assert document["chunk_count"] == 0

    # The worker goes on, and what the knowledge base held is still there.
    later = await upload(
        client, tenant.admin, kb["id"], "travel.md", (CORPUS / "travel.md").read_bytes()
    )
    await ingested(runtime)
    assert (await _document(client, tenant, kb["id"], later["id"]))["status"] == "ready"
    assert (await _document(client, tenant, kb["id"], oncall["id"]))["status"] == "ready"
    hits = await search(client, tenant.admin, kb["id"], "who is on call at night", top_k=3)
    assert oncall["id"] in {hit["citation"]["document_id"] for hit in hits}


@pytest.mark.both_databases
async def test_the_caps_come_from_the_knowledge_settings(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.settings.knowledge, "max_pdf_pages", 2)
    tenant = await make_tenant(runtime, client)
    kb = await create_base(client, tenant.admin)
    manual = pdf_bytes([[f"Page {n} of the manual."] for n in range(3)])
    created = await upload(client, tenant.admin, kb["id"], "manual.pdf", manual)
    await ingested(runtime)
    document = await _document(client, tenant, kb["id"], created["id"])
    assert document["status"] == "failed"
    assert document["error"] == (
        "the PDF has more than 2 pages, the cap (APIARY_KNOWLEDGE__MAX_PDF_PAGES)"
    )


# --- isolation: one tenant's bomb, another tenant's search, the process's memory --------


def _peak_rss() -> int:
    """The kernel's high-water mark of this process's resident memory (VmHWM), in bytes:
    extraction runs in this process (a thread of the app's ingestion queue)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the high-water mark to the current resident size (Linux 4.0+) and return it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError as error:
        pytest.skip(f"cannot reset the peak RSS here: {error}")
    return _peak_rss()


@pytest.mark.both_databases
async def test_a_bomb_upload_neither_stalls_another_tenant_nor_grows_memory(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    victim = await make_tenant(runtime, client)
    victim_kb = await create_base(client, victim.admin)
    # A PDF and a DOCX ingested first: both parsers and the embedding model are loaded
    # before the baseline, so only what the bombs cost is measured.
    for name in ("kestrel-manual.pdf", "hiring-process.docx", "oncall.md"):
        await upload(client, victim.admin, victim_kb["id"], name, (CORPUS / name).read_bytes())
    await ingested(runtime)
    await search(client, victim.admin, victim_kb["id"], "what does error E-17 mean")

    attacker = await make_tenant(runtime, client)
    attacker_kb = await create_base(client, attacker.admin)
    # Both get past the checks made on what the file says of itself and are cut while they
    # inflate: the DOCX (its ratio within the cap) by its element count in `_inflate_all`,
    # the PDF by its stream cap.
    bombs = {
        "report.docx": (docx_element_bomb(16_000_000), "MAX_ELEMENTS"),
        "manual.pdf": (pdf_bomb(70_000_000), "MAX_PDF_STREAM_BYTES"),
    }
    gc.collect()
    baseline = _reset_peak_rss()

    for filename, (bomb, cap) in bombs.items():
        created = await upload(client, attacker.admin, attacker_kb["id"], filename, bomb)
        deadline = time.monotonic() + 120
        answered = 0
        while True:
            # The victim asks while the bomb is queued or being read: answered, and right.
            hits = await search(client, victim.admin, victim_kb["id"], "error E-17", top_k=1)
            assert "E-17" in hits[0]["text"]
            answered += 1
            growth = _peak_rss() - baseline
            assert growth < 100 * MiB, f"{filename}: peak RSS grew {growth / MiB:.0f} MiB"
            document = await _document(client, attacker, attacker_kb["id"], created["id"])
            if document["status"] in ("ready", "failed"):
                break
            assert time.monotonic() < deadline, f"{filename} still {document['status']}"
            await asyncio.sleep(0.05)
        assert document["status"] == "failed", document
        assert f"APIARY_KNOWLEDGE__{cap}" in document["error"]
        assert answered >= 1

    growth = _peak_rss() - baseline
    print(f"peak RSS growth over both bombs: {growth / MiB:.1f} MiB")
    assert growth < 100 * MiB
