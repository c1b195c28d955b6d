"""docs/formats.md documents every kind, column, reason and type name."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.model import codes, reasons, schema

DOC = (Path(__file__).parents[2] / "docs" / "formats.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", list(schema.CSV_HEADERS))
def test_every_header_documented(kind: str) -> None:
    assert f"Header `{','.join(schema.CSV_HEADERS[kind])}`" in DOC
    for name in schema.CSV_HEADERS[kind] + schema.CSV_OPTIONAL.get(kind, ()):
        assert f"`{name}`" in DOC


def test_every_reason_and_type_name_documented() -> None:
    for reason, meaning in reasons.REASONS.items():
        assert f"| `{reason}` | {meaning} |" in DOC
    for name in [r.name for r in codes.READING_TYPES] + [r.name for r in codes.REGISTER_TYPES]:
        assert f"`{name}`" in DOC
    for column in schema.QUARANTINE.names:
        assert f"`{column}`" in DOC


def test_documented_example_files_decode_without_rejects() -> None:
    from headend.wire.csvfmt import decode_csv

    blocks = DOC.split("```\n")[1::2]  # the fenced examples
    csvs = [b for b in blocks if "," in b.splitlines()[0] and "YYYY" not in b]
    assert len(csvs) == 8
    for text in csvs:
        units = list(decode_csv(text.encode(), source="doc"))
        assert [d.rejects for d in units] == [[]], text
