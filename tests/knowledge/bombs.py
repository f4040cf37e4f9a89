"""Hostile documents built for tests: small uploads that inflate or expand enormously.

Each is written in streaming fashion (zlib and zipfile fed chunk by chunk), so building a
bomb that inflates to 60 MB costs the test little more than its compressed size.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib

from tests.knowledge.documents import docx_bytes

_PARAGRAPH = b"<w:p><w:r><w:t>the bomb goes tick</w:t></w:r></w:p>"
_BODY = b"<w:body>"


def _docx_parts() -> dict[str, bytes]:
    """The parts of a real one-paragraph DOCX written by python-docx."""
    with zipfile.ZipFile(io.BytesIO(docx_bytes([("p", "A small honest document.")]))) as source:
        return {name: source.read(name) for name in source.namelist()}


def docx_bomb(inflated_bytes: int) -> bytes:
    """A valid DOCX whose word/document.xml holds enough paragraphs to inflate to about
    `inflated_bytes`; repetition compresses about 600:1, so 60 MB arrive as ~100 KB."""
    parts = _docx_parts()
    head, tail = parts["word/document.xml"].split(_BODY, 1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in parts.items():
            if name != "word/document.xml":
                archive.writestr(name, data)
                continue
            with archive.open(name, "w", force_zip64=True) as part:
                part.write(head + _BODY)
                block = _PARAGRAPH * 20_000
                for _ in range(max(1, inflated_bytes // len(block))):
                    part.write(block)
                part.write(tail)
    return out.getvalue()


def docx_element_bomb(inflated_bytes: int) -> bytes:
    """A valid DOCX whose word/document.xml holds about `inflated_bytes` of tiny paragraphs,
    each with a random word, so the part compresses only about 60:1: under the ratio cap and
    the declared-size cap, it passes every check made before inflating, and is caught only
    while it is inflated (the element count), where python-docx would build a tree of
    millions of elements from it."""
    parts = _docx_parts()
    head, tail = parts["word/document.xml"].split(_BODY, 1)
    words = random.Random(7)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in parts.items():
            if name != "word/document.xml":
                archive.writestr(name, data)
                continue
            with archive.open(name, "w", force_zip64=True) as part:
                part.write(head + _BODY)
                written = 0
                while written < inflated_bytes:
                    block = b"".join(
                        b"<w:p><w:r><w:t>%x</w:t></w:r></w:p>" % words.getrandbits(4)
                        for _ in range(20_000)
                    )
                    part.write(block)
                    written += len(block)
                part.write(tail)
    return out.getvalue()


def docx_with_entries(count: int) -> bytes:
    """A valid DOCX with `count` extra empty entries beside its parts."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in _docx_parts().items():
            archive.writestr(name, data)
        for number in range(count):
            archive.writestr(f"customXml/e{number}.bin", b"")
    return out.getvalue()


def docx_with_entities() -> bytes:
    """A DOCX whose document.xml declares "billion laughs" entities and uses the last."""
    parts = _docx_parts()
    head, rest = parts["word/document.xml"].split(b"?>", 1)
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    ]
    dtd = f"<!DOCTYPE w:document [{''.join(levels)}]>".encode()
    body = rest.replace(b"A small honest document.", b"&lol9;")
    parts["word/document.xml"] = head + b"?>" + dtd + body
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def pdf_bomb(inflated_bytes: int, *, pages: int = 1, filler: bytes = b" ") -> bytes:
    """A PDF of `pages` pages, each with a line of text and then a FlateDecode content
    stream of `filler` (whitespace, or operators such as `0 0 m`) inflating to
    `inflated_bytes` (whitespace compresses about 1000:1)."""
    compressor = zlib.compressobj(9)
    text = b"BT /F1 11 Tf 56 790 Td (Page text before the padding.) Tj ET\n"
    padding = filler * (1024 * 1024 // len(filler))
    stream = compressor.compress(text)
    for _ in range(max(1, inflated_bytes // len(padding))):
        stream += compressor.compress(padding)
    stream += compressor.flush()
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    page_ids = [4 + 2 * n for n in range(pages)]
    kids = " ".join(f"{n} 0 R" for n in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id in page_ids:  # each page its own copy of the stream
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
            + stream
            + b"\nendstream"
        )
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
