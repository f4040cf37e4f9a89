"""An invoice as a PDF (fpdf2) and as CSV. fpdf2 is imported when a PDF is asked for: the
API process does not carry it otherwise."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from apiary.billing.models import Invoice, InvoiceLine
from apiary.billing.money import format_minor


def invoice_csv(invoice: Invoice, lines: Sequence[InvoiceLine], *, tenant_name: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "invoice",
            "tenant",
            "period",
            "position",
            "kind",
            "description",
            "amount_minor",
            "currency",
        ]
    )
    for line in lines:
        writer.writerow(
            [
                invoice.number,
                tenant_name,
                invoice.period,
                line.position,
                line.kind,
                line.description,
                line.amount_minor,
                invoice.currency,
            ]
        )
    for kind, amount in (
        ("subtotal", invoice.subtotal_minor),
        ("tax", invoice.tax_minor),
        ("total", invoice.total_minor),
    ):
        writer.writerow(
            [
                invoice.number,
                tenant_name,
                invoice.period,
                "",
                kind,
                kind.title(),
                amount,
                invoice.currency,
            ]
        )
    return out.getvalue()


def _latin1(text: str) -> str:
    # The PDF's core font covers Latin-1; anything else (a tenant named in another script)
    # is shown as "?" rather than failing the download.
    return text.encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(
    invoice: Invoice, lines: Sequence[InvoiceLine], *, tenant_name: str, issuer: str
) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.number}")
    pdf.set_author(_latin1(issuer))
    pdf.set_creation_date(invoice.issued_at)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(issuer), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    pdf.cell(0, 7, f"Invoice {invoice.number}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 7, _latin1(f"Billed to: {tenant_name}"), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(
        0, 7, f"Period: {invoice.period}    Plan: {invoice.plan}", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.cell(
        0,
        7,
        f"Issued: {invoice.issued_at:%Y-%m-%d}    Currency: {invoice.currency}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(140, 8, "Description", border="B")
    pdf.cell(0, 8, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    tax_label = "Tax"
    for line in lines:
        if line.kind == "tax":  # shown with the totals, under the subtotal it is taken on
            tax_label = line.description
            continue
        pdf.cell(140, 7, _latin1(line.description))
        pdf.cell(
            0,
            7,
            format_minor(line.amount_minor, invoice.currency),
            align="R",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    for label, amount in (
        ("Subtotal", invoice.subtotal_minor),
        (tax_label, invoice.tax_minor),
        ("Total", invoice.total_minor),
    ):
        pdf.cell(140, 8, label, align="R")
        pdf.cell(
            0, 8, format_minor(amount, invoice.currency), align="R", new_x="LMARGIN", new_y="NEXT"
        )
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(
        0,
        5,
        f"Usage this period: {invoice.calls:,} model calls, "
        f"{invoice.prompt_tokens + invoice.completion_tokens:,} tokens, "
        f"{invoice.executions:,} executions, {invoice.storage_bytes:,} bytes stored.",
    )
    return bytes(pdf.output())
