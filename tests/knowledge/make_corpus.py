"""Writes the PDF and DOCX files of the test corpus (run once; the outputs are committed).

.venv/bin/python -m tests.knowledge.make_corpus
"""

from __future__ import annotations

from pathlib import Path

from tests.knowledge.documents import Block, docx_bytes, pdf_bytes

CORPUS = Path(__file__).with_name("corpus")

PDFS: dict[str, list[list[str]]] = {
    "annual-report.pdf": [
        [
            "Larkspur Robotics annual report 2026",
            "Financial summary",
            "Revenue grew to 48.3 million EUR, up 21 percent on the previous year.",
            "Recurring revenue from Larkspur Care plans was 6.1 million EUR.",
        ],
        [
            "People",
            "At the end of the year the company employed 312 people.",
            "Our offices are in Lyon, Tallinn and Porto.",
            "Employee engagement rose to 81 percent in the yearly survey.",
        ],
        [
            "Goals for next year",
            "Ship the Heron 2 with a payload of 500 kg.",
            "Open a sales office in Munich to serve customers in Germany.",
        ],
    ],
    "safety-certification.pdf": [
        [
            "Safety certification summary",
            "The Kestrel arm is certified to ISO 10218-1 for industrial robot safety.",
            "The certification audit was carried out by TUV Rheinland in March 2026.",
        ],
        [
            "Emergency stop",
            "Both robots implement a category 0 emergency stop: power to the motors",
            "is removed at once when the red mushroom button is pressed.",
            "The emergency stop circuit is tested automatically at every power-up.",
        ],
    ],
    "benefits-guide.pdf": [
        [
            "Benefits guide",
            "Health insurance",
            "All employees and their families are insured with Meridian Health.",
            "Dental care is included; glasses are reimbursed up to 200 EUR every two years.",
        ],
        [
            "Pension",
            "Larkspur matches employee pension contributions up to 6 percent of salary.",
            "Matching starts after the probation period of three months.",
        ],
        [
            "Wellbeing",
            "Every employee receives a gym and sports stipend of 40 EUR per month.",
            "Counselling sessions are free and confidential through the wellbeing line.",
        ],
    ],
    "kestrel-manual.pdf": [
        [
            "Kestrel user manual",
            "Unpacking",
            "Lift the arm out of its crate with two people, holding it by the base only.",
            "Keep the foam inserts: they are needed to ship the arm for service.",
        ],
        [
            "Calibration",
            "Calibrate the joints after every firmware update.",
            "Move each joint to its marked zero position and press Calibrate on the pendant.",
            "The whole calibration takes about ten minutes.",
        ],
        [
            "Troubleshooting",
            "Error E-17 means the joint encoder readings disagree: recalibrate the arm.",
            "If the pendant stays dark, check the 24 V supply fuse in the control box.",
        ],
    ],
}

DOCXS: dict[str, list[Block]] = {
    "sales-playbook.docx": [
        ("h1", "Sales playbook"),
        ("h2", "Discounts"),
        (
            "p",
            "Account executives may grant discounts of up to 10 percent on list price. "
            "Sales managers may approve up to 20 percent; anything beyond needs the VP of Sales.",
        ),
        ("h2", "Client entertainment"),
        ("p", "Client dinners are capped at 90 EUR per guest and must be logged in the CRM."),
        ("h2", "Demos"),
        ("p", "Book the demo cell in Lyon at least two weeks ahead for on-site customer demos."),
    ],
    "hiring-process.docx": [
        ("h1", "Hiring process"),
        ("h2", "Interview loop"),
        (
            "p",
            "Candidates go through four stages: a recruiter call, a technical interview, "
            "a take-home exercise and a final team conversation.",
        ),
        (
            "p",
            "The take-home exercise must never take more than three hours, and candidates "
            "are paid 150 EUR for completing it.",
        ),
        ("h2", "Decisions"),
        ("p", "The hiring committee decides within five business days of the final interview."),
        ("h2", "Interviewers"),
        (
            "table",
            [
                ["Stage", "Interviewer"],
                ["Recruiter call", "Talent partner"],
                ["Technical interview", "Two senior engineers"],
                ["Team conversation", "Hiring manager and a future peer"],
            ],
        ),
    ],
    "vendor-policy.docx": [
        ("h1", "Vendor policy"),
        ("h2", "Onboarding a vendor"),
        (
            "p",
            "New vendors who will process company data must complete the security "
            "questionnaire before any contract is signed.",
        ),
        ("h2", "Contracts"),
        (
            "p",
            "Contracts worth more than 50,000 EUR per year require a review by the legal team "
            "and the signature of the CFO.",
        ),
    ],
    "remote-work.docx": [
        ("h1", "Remote work policy"),
        ("p", "Employees may work remotely up to three days per week."),
        ("h2", "Home office"),
        (
            "p",
            "A one-time home office stipend of 600 EUR covers a desk, a chair or a monitor. "
            "Keep the receipt and file it like any other expense.",
        ),
        ("h2", "Working abroad"),
        ("p", "Working from another country is allowed for up to 20 days per year."),
    ],
}


def main() -> None:
    for name, pages in PDFS.items():
        (CORPUS / name).write_bytes(pdf_bytes(pages))
    for name, blocks in DOCXS.items():
        (CORPUS / name).write_bytes(docx_bytes(blocks))


if __name__ == "__main__":
    main()
