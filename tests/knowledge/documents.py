"""Small PDF and DOCX files built for tests: a minimal PDF writer and python-docx.

The PDF writer emits real text (Helvetica, one `Tj` per line, one page per list entry)
with a correct cross-reference table, so pypdf reads it as it would any simple PDF.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import docx


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: Sequence[Sequence[str]]) -> bytes:
    """A PDF with one page per entry, each entry a list of text lines (ASCII)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * n for n in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{n} 0 R" for n in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for number, lines in enumerate(pages):
        text = " T* ".join(f"({_escape(line)}) Tj" for line in lines)
        stream = f"BT /F1 11 Tf 14 TL 56 790 Td {text} ET".encode()
        contents = page_ids[number] + 1
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % contents
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % index + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


Block = tuple[str, str | list[list[str]]]  # ("h1".."h3" | "p", text) or ("table", rows)


def docx_bytes(blocks: Sequence[Block]) -> bytes:
    document = docx.Document()
    for kind, value in blocks:
        if kind == "table":
            assert isinstance(value, list)
            table = document.add_table(rows=len(value), cols=len(value[0]))
            for r, row in enumerate(value):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        elif kind.startswith("h"):
            assert isinstance(value, str)
            document.add_heading(value, level=int(kind[1]))
        else:
            assert isinstance(value, str)
            document.add_paragraph(value)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
