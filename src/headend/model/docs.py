"""Render docs/codes.md from :mod:`headend.model.codes` (so the doc cannot drift).

``python -m headend.model.docs > docs/codes.md``; a test checks the file is current.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from headend.model import codes, commands, dr, reasons


def _section(title: str, intro: Sequence[str], header: Sequence[str],
             rows: Iterable[Sequence[object]]) -> list[str]:
    """A ``##`` section: title, intro lines, then a Markdown table."""
    out = ["", f"## {title}", ""]
    if intro:
        out += [*intro, ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("| " + " | ".join("---" for _ in header) + " |")
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render() -> str:
    out = [
        "# Codes",
        "",
        "Generated from `src/headend/model/codes.py`, `model/commands.py`, `model/dr.py`",
        "and `model/reasons.py` by",
        "`python -m headend.model.docs > docs/codes.md`; do not edit by hand.",
    ]
    out += _section(
        "Interval reading types",
        ["ReadingType codes follow IEC 61968-9 Annex C (18 fields); the measuring-period field",
         "(3rd) shown is for 15-minute data and is set from the meter's interval on export.",
         "Values are stored as integers in the resolution shown."],
        ["code", "name", "IEC 61968-9 ReadingType", "unit", "resolution", "commodity",
         "physical limit per 15 min"],
        ([rt.code, f"`{rt.name}`", f"`{rt.cim}`", rt.unit, f"{rt.resolution:g}",
          codes.COMMODITIES[rt.commodity], f"{rt.min_value:g} .. {rt.max_value:g} {rt.unit}"]
         for rt in codes.READING_TYPES),
    )
    out += _section(
        "Register types (daily payload)", [],
        ["code", "name", "IEC 61968-9 ReadingType", "unit", "resolution"],
        ([r.code, f"`{r.name}`", f"`{r.cim}`", r.unit, f"{r.resolution:g}"]
         for r in codes.REGISTER_TYPES),
    )
    out += _section(
        "Quality codes",
        ["IEC 61968-9 ReadingQualityType codes, `system.category.index`. System 1: the meter;",
         "2: headend's collection path; 3: headend acting as meter data management (VEE).",
         "Categories: 0 valid, 1 diagnostics, 2 power quality, 3 tamper/revenue protection,",
         "4 data collection, 6 failed validation (suspect), 7 edited, 8 estimated. Stored as a",
         "`uint32` bit mask; in CSV, codes joined by `;`."],
        ["bit", "code", "name", "meaning"],
        ([q.bit, f"`{q.code}`", q.name, q.description] for q in codes.QUALITY_CODES),
    )
    out += _section(
        "End-device event codes",
        ["IEC 61968-9 EndDeviceEventType `type.domain.subdomain.eventOrAction`. Any well-formed",
         "code (type <= 31, domain <= 127, subdomain and event <= 1023) is accepted and stored,",
         "packed into a `uint32`; these are the ones headend knows and acts upon:"],
        ["code", "name", "meaning"],
        ([f"`{e.code}`", e.name, e.description] for e in codes.EVENT_TYPES),
    )
    out += _section("Quarantine reasons", [], ["reason", "meaning"],
                    ([f"`{n}`", m] for n, m in reasons.REASONS.items()))
    out += _section(
        "Command kinds and control codes",
        ["IEC 61968-9 EndDeviceControlType `type.domain.subdomain.eventOrAction`; the type",
         "field is the meter's: " + ", ".join(
             f"{t} {codes.COMMODITIES[c]}" for c, t in commands.DEVICE_TYPE.items()) + ".",
         "Read and ping are composed from the Annex E enumerations (no named control was",
         "found for them); see docs/commands.md."],
        ["code", "kind", "control code (electric)", "fits", "default expiry [s]", "meaning"],
        ([k.code, f"`{k.name}`",
          f"`{commands.control_code(k.name, k.commodities[0])}`",
          ", ".join(codes.COMMODITIES[c] for c in k.commodities), k.expires_s, k.description]
         for k in commands.COMMAND_KINDS),
    )
    out += _section(
        "Command states", ["Moves allowed: " + "; ".join(
            f"`{s}` -> " + ", ".join(f"`{t}`" for t in sorted(nxt))
            for s, nxt in commands.TRANSITIONS.items() if nxt) + ". A command is created",
            "`queued` or `rejected`; `completed`, `failed`, `expired` and `rejected` are final."],
        ["state", "meaning"], ([f"`{s}`", m] for s, m in commands.COMMAND_STATES.items()))
    out += _section(
        "Command reasons",
        ["A `rejected`, `failed` or `expired` command carries one of these reasons. A",
         "rejection's reasons are checked in this order; the first that applies is given."],
        ["reason", "state", "meaning"],
        [*([f"`{n}`", "rejected", m] for n, m in commands.REJECTIONS.items()),
         *([f"`{n}`", "failed", m] for n, m in commands.FAILURES.items()),
         *([f"`{n}`", "expired", m] for n, m in commands.EXPIRY.items())],
    )
    out += _section(
        "Command response statuses",
        ["The `status` column of a `command_responses` CSV (docs/commands.md) and the",
         "state it reports; a failure is reported by its reason."],
        ["status", "state"],
        ([f"`{s}`", f"`{st}`"] for s, st in commands.RESPONSE_STATUSES.items()),
    )
    out += _section(
        "Switch states", ["A meter's service switch as the registry keeps it (`switch_state`",
                          "in `headend export meters`)."],
        ["code", "switch_state"], enumerate(f"`{s}`" for s in commands.SWITCH_STATES))
    out += _section(
        "Tariff kinds", ["The `kind` of a tariff file (docs/dr.md). Periods that no season",
                         (f"names: `{dr.FLAT_PERIOD}`, `{dr.CRITICAL_PEAK_PERIOD}`, "
                         f"`{dr.REAL_TIME_PERIOD}`.")],
        ["kind", "prices"], ([f"`{k}`", m] for k, m in dr.TARIFF_KINDS.items()))
    out += _section("Tariff day types", [], ["day type", "days"],
                    ([f"`{k}`", m] for k, m in dr.DAY_TYPES.items()))
    out += _section("Demand-response baseline methods", ["The M&V baselines (docs/dr.md)."],
                    ["method", "baseline"],
                    ([f"`{k}`", m] for k, m in dr.BASELINE_METHODS.items()))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
