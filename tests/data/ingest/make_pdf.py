"""Regenerates branch.pdf (needs the dev dependency fpdf2): two pages, an outline, a title."""

import datetime
from pathlib import Path

from fpdf import FPDF


def main() -> None:
    pdf = FPDF()
    pdf.set_title("Branch Handbook")
    pdf.set_creation_date(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))  # reproducible bytes
    for title, body in (
        (
            "Opening hours",
            "The branch opens at 9:00 on weekdays. It closes at 17:00.\n"
            "On Saturdays the branch opens at 10:00.",
        ),
        (
            "Lost cards",
            "Lost cards must be reported by phone at once. "
            "A new card costs 10 yuan and arrives in five days.",
        ),
    ):
        pdf.add_page()
        pdf.start_section(title)
        pdf.set_font("Helvetica", "B", 14)
        pdf.cell(text=title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 6, body)
    Path(__file__).with_name("branch.pdf").write_bytes(bytes(pdf.output()))


if __name__ == "__main__":
    main()
