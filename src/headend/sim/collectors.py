"""Simulated collectors that answer commands: the pure part (issue 12, point 5).

What a virtual collector does with the commands it receives, decided without any I/O so
that the fleet (:mod:`headend.sim.fleet`) only moves bytes:

* :class:`FleetMeters`: the two-way meters with a collector, from a meters CSV or a
  simulated :class:`~headend.sim.Utility` (so the fleet matches serve's registry);
* :class:`Behaviour`: latency per technology, failure, silence and duplicate rates;
* :func:`decide`: each command's fate (answer, failure reason or silence, delay) drawn
  from a hash of ``(seed, command_id)``, so it does not depend on the order commands
  arrive in, and a run with the same seed and ids makes the same choices;
* :func:`reads_csv` and :func:`registers_csv`: the canonical reads and registers CSVs
  an on-demand read uploads (the meter's last intervals on its own grid, plausible
  values from :mod:`headend.sim.profiles`, zero energy while its service switch is
  open; its total register read now);
* :func:`responses_csv`: the ``command_responses`` CSV;
* :class:`Truth` and :func:`score`: what the collector did with each command, and the
  head end's final state it implies.

Latency [s] is drawn uniformly in ``[low, high]`` of the meter's technology
(:data:`DEFAULT_LATENCY`: RF mesh 2-60 s, PLC 10-180 s, cellular ``gprs`` 1-5 s), times
``latency_scale``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from headend.errors import ConfigError
from headend.model import commands as C
from headend.model.codes import COMMODITIES, TECHNOLOGIES
from headend.model.schema import CSV_HEADERS
from headend.sim import profiles
from headend.sim.writers import decimal_text, iso_times

__all__ = [
    "DEFAULT_LATENCY",
    "Behaviour",
    "Decision",
    "FleetMeters",
    "Truth",
    "decide",
    "delays",
    "expected_state",
    "reads_csv",
    "registers_csv",
    "responses_csv",
    "score",
]

#: technology -> (low, high) answer latency [s]
DEFAULT_LATENCY: Final[Mapping[str, tuple[float, float]]] = {
    "rf": (2.0, 60.0), "plc": (10.0, 180.0), "gprs": (1.0, 5.0)}
#: failure reasons a collector reports, per kind, with their relative weights
FAILURE_MIX: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    "read": (("meter_unreachable", 0.8), ("collector_error", 0.15), ("not_supported", 0.05)),
    "ping": (("meter_unreachable", 0.9), ("collector_error", 0.1)),
    "disconnect": (("meter_unreachable", 0.5), ("switch_failed", 0.2), ("meter_refused", 0.2),
                   ("collector_error", 0.1)),
    "connect": (("meter_unreachable", 0.5), ("switch_failed", 0.2), ("meter_refused", 0.2),
                ("collector_error", 0.1)),
}
#: reading type of an on-demand read per commodity name (all in 0.001 units)
READ_TYPE: Final[Mapping[str, str]] = {"electric": "kwh_del", "water": "water_m3",
                                       "gas": "gas_m3"}
#: what a collector does with a command: answer completed, answer a failure, or nothing
ACTIONS: Final = ("completed", "failed", "none")

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Behaviour:
    """How the virtual collectors answer (rates are shares of commands, 0 to 1).

    Attributes
    ----------
    latency : mapping
        Technology name (``rf``, ``plc``, ``gprs``: cellular) -> ``(low, high)`` [s].
    latency_scale : float
        Multiplies every latency (0: answer at once).
    failure_rate : float
        Commands answered with a failure reason (:data:`FAILURE_MIX`).
    silent_rate : float
        Commands never answered (the head end resends them, then they expire).
    duplicate_rate : float
        Answered commands whose answer is sent twice.
    read_intervals : int
        Intervals an on-demand read uploads (the meter's last ones).
    unpowered : str
        What a meter without power gets: ``failed`` (``meter_unreachable``) or ``none``.
    """

    latency: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_LATENCY))
    latency_scale: float = 1.0
    failure_rate: float = 0.0
    silent_rate: float = 0.0
    duplicate_rate: float = 0.0
    read_intervals: int = 4
    unpowered: str = "failed"

    def __post_init__(self) -> None:
        for name in ("failure_rate", "silent_rate", "duplicate_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, not {v}")
        if self.failure_rate + self.silent_rate > 1.0:
            raise ConfigError("failure_rate + silent_rate exceed 1")
        if self.latency_scale < 0:
            raise ConfigError(f"latency_scale must be >= 0, not {self.latency_scale}")
        for tech, (lo, hi) in self.latency.items():
            if tech not in TECHNOLOGIES or not 0 <= lo <= hi:
                raise ConfigError(f"latency {tech}={lo}:{hi}: a technology of {TECHNOLOGIES} "
                                  "and 0 <= low <= high")
        if self.unpowered not in ("failed", "none"):
            raise ConfigError(f"unpowered must be failed or none, not {self.unpowered!r}")
        if self.read_intervals < 1:
            raise ConfigError("read_intervals must be >= 1")


@dataclass(frozen=True, eq=False)
class FleetMeters:
    """The meters the fleet answers for: two-way, with a collector.

    Attributes (arrays of one length, one row per meter)
    ------------------------------------------------------
    meter_id, collector_id : object arrays of str
    technology, commodity : object arrays of str (``rf``/``plc``/``gprs``;
        ``electric``/``water``/``gas``)
    interval_s : int64 [s]
    """

    meter_id: npt.NDArray[np.object_]
    collector_id: npt.NDArray[np.object_]
    technology: npt.NDArray[np.object_]
    commodity: npt.NDArray[np.object_]
    interval_s: I64

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {m: i for i, m in enumerate(self.meter_id)})

    def __len__(self) -> int:
        return len(self.meter_id)

    @property
    def collectors(self) -> list[str]:
        """The collector ids, sorted."""
        return sorted(set(self.collector_id.tolist()))

    def index(self, meter_ids: Iterable[str]) -> I64:
        """Row of each meter id (-1: not in the fleet)."""
        ix: dict[str, int] = self.__dict__["_index"]
        return np.array([ix.get(m, -1) for m in meter_ids], np.int64)

    @classmethod
    def from_table(cls, t: pa.Table) -> FleetMeters:
        """From a table with the meters CSV's columns as text (``two_way`` as text or
        bool; ``interval_minutes`` optional, default 15)."""
        def col(name: str, default: str | None = None) -> pa.Array:
            if name in t.column_names:
                return pc.cast(t.column(name).combine_chunks(), pa.string())
            return pa.array([default] * t.num_rows, pa.string())

        two_way = pc.equal(pc.utf8_lower(col("two_way", "false")), "true")
        coll = col("collector_id")
        keep = pc.and_(pc.fill_null(two_way, False),
                       pc.fill_null(pc.greater(pc.utf8_length(coll), 0), False))
        mins = pc.cast(pc.fill_null(pc.if_else(pc.equal(col("interval_minutes"), ""),
                                               None, col("interval_minutes")), "15"),
                       pa.int64())

        def arr(a: pa.Array) -> npt.NDArray[np.object_]:
            return np.asarray(pc.filter(a, keep).to_numpy(zero_copy_only=False), object)

        return cls(arr(col("meter_id")), arr(coll), arr(pc.utf8_lower(col("technology"))),
                   arr(pc.utf8_lower(col("commodity"))),
                   pc.filter(mins, keep).to_numpy().astype(np.int64) * 60)

    @classmethod
    def from_csv(cls, path: str | Path) -> FleetMeters:
        """From a meters CSV (docs/formats.md, "Meters registry")."""
        opts = pacsv.ConvertOptions(column_types={
            n: pa.string() for n in ("meter_id", "collector_id", "technology", "commodity",
                                     "two_way", "interval_minutes")},
            strings_can_be_null=False)
        try:
            t = pacsv.read_csv(path, convert_options=opts)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"meters CSV {path}: {exc}") from exc
        missing = {"meter_id", "collector_id", "technology", "commodity",
                   "two_way"} - set(t.column_names)
        if missing:
            raise ConfigError(f"meters CSV {path}: no column {', '.join(sorted(missing))}")
        return cls.from_table(t)

    @classmethod
    def from_utility(cls, utility: Any) -> FleetMeters:
        """From a simulated utility (:func:`headend.sim.build_utility`)."""
        m = utility.meters
        return cls.from_table(pa.table({
            "meter_id": m.column("meter_id"),
            "collector_id": m.column("collector_id"),
            "technology": pc.take(pa.array(TECHNOLOGIES), m.column("technology")),
            "commodity": pc.take(pa.array(COMMODITIES), m.column("commodity")),
            "two_way": pc.cast(m.column("two_way"), pa.string()),
            "interval_minutes": pc.cast(pc.divide(m.column("interval_s"), 60), pa.string()),
        }))


# --------------------------------------------------------------------------- decisions


def uniforms(seed: int, keys: Sequence[str], k: int) -> F64:
    """``(len(keys), k)`` uniforms in [0, 1) from a hash of ``(seed, key)``: the same
    for a key whatever the order or batch it comes in."""
    raw = b"".join(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8 * k).digest()
                   for key in keys)
    u = np.frombuffer(raw, np.uint64).reshape(len(keys), k) >> np.uint64(11)
    out: F64 = u.astype(np.float64) * (1.0 / (1 << 53))
    return out


@dataclass(frozen=True, eq=False)
class Decision:
    """What the collector does with a batch of commands (arrays, one row per command).

    ``action`` indexes :data:`ACTIONS`; ``reason`` is the failure reason (``""`` when
    completed); ``why_none`` says why a command gets no answer (``silent``,
    ``unpowered``); ``delay_s`` the latency [s]; ``duplicate`` whether the answer is
    sent twice.
    """

    action: npt.NDArray[np.int8]
    reason: npt.NDArray[np.object_]
    why_none: npt.NDArray[np.object_]
    delay_s: F64
    duplicate: BOOL


def _delay(u: F64, technologies: Sequence[str], b: Behaviour) -> F64:
    tech = np.asarray(technologies, object)
    lo = np.zeros(len(u))
    hi = np.zeros(len(u))
    for t, (a, z) in b.latency.items():
        m = tech == t
        lo[m], hi[m] = a, z
    out: F64 = (lo + (hi - lo) * u) * b.latency_scale
    return out


def delays(seed: int, command_ids: Sequence[str], technologies: Sequence[str],
           b: Behaviour) -> F64:
    """The latency [s] of each command (the same as :func:`decide`'s ``delay_s``)."""
    return _delay(uniforms(seed, command_ids, 4)[:, 0], technologies, b)


def decide(seed: int, command_ids: Sequence[str], kinds: Sequence[str],
           technologies: Sequence[str], powered: BOOL, b: Behaviour) -> Decision:
    """Each command's fate (module docstring): silent with ``silent_rate``, else a
    failure with ``failure_rate``, else completed; a meter without power (``powered``
    false) gets ``b.unpowered``; the delay from its technology's latency range."""
    n = len(command_ids)
    u = uniforms(seed, command_ids, 4)
    kind = np.asarray(kinds, object)
    delay = _delay(u[:, 0], technologies, b)
    action = np.zeros(n, np.int8)
    silent = u[:, 1] < b.silent_rate
    failed = ~silent & (u[:, 1] < b.silent_rate + b.failure_rate)
    reason = np.full(n, "", object)
    for k, mix in FAILURE_MIX.items():
        m = failed & (kind == k)
        if m.any():
            names = np.array([r for r, _ in mix], object)
            cum = np.cumsum([w for _, w in mix])
            reason[m] = names[np.minimum(np.searchsorted(cum / cum[-1], u[m, 2], side="right"),
                                         len(names) - 1)]
    why = np.full(n, "", object)
    why[silent] = "silent"
    dark = ~np.asarray(powered, bool)
    if b.unpowered == "failed":
        failed |= dark & ~silent
        reason[dark & ~silent] = "meter_unreachable"
    else:
        silent = silent | dark
        failed &= ~dark
        why[dark & (why == "")] = "unpowered"
    action[failed] = 1
    action[silent] = 2
    reason[silent] = ""
    dup = (u[:, 3] < b.duplicate_rate) & ~silent
    return Decision(action, reason, why, delay, dup)


# --------------------------------------------------------------------------- uploads


def reads_csv(meters: FleetMeters, rows: I64, at_s: float, n_intervals: int, *,
              seed: int = 0, open_since: F64 | None = None, open_until: F64 | None = None,
              temperature_c: float = 10.0) -> tuple[bytes, int]:
    """The canonical reads CSV of the meters at ``rows`` at time ``at_s`` [Unix s]: each
    meter's last ``n_intervals`` interval ends at or before ``at_s`` on its own grid.
    Electric ``kwh_del`` from the residential load shape
    (:func:`headend.sim.profiles.demand_kw`), water and gas volumes from their shapes,
    each meter's mean load from a hash of its id; intervals ending while the service
    switch was open (``open_since[r] < end <= open_until[r]``, per meter row, NaN: never
    opened) read zero. Returns ``(csv bytes, rows)``."""
    if len(rows) == 0:
        return b"", 0
    step = meters.interval_s[rows]
    last = (np.int64(at_s) // step) * step
    k = np.arange(n_intervals, dtype=np.int64)
    ends = (last[:, None] - k[None, :] * step[:, None]).ravel()
    r = np.repeat(rows, n_intervals)
    h = np.repeat(step, n_intervals).astype(np.float64) / 3600.0
    com = meters.commodity[r]
    ids = meters.meter_id[r]
    base = np.repeat(_base_load(seed, meters, rows), n_intervals)
    noise = (uniforms(seed, [f"{m}@{e}" for m, e in zip(ids, ends, strict=True)], 1)[:, 0]
             * 2.0 - 1.0).astype(np.float32)
    value = np.zeros(len(r))
    cls = np.zeros(len(r), np.uint8)
    zero = np.zeros(len(r), np.float32)
    for e in np.unique(ends):
        m = ends == e
        mo = profiles.moment(float(e) - float(h[m][0]) * 1800.0, 0.0, temperature_c, 0.8)
        el = m & (com == "electric")
        if el.any():
            kw = profiles.demand_kw(mo, cls[el], base[el], zero[el] + 0.05, zero[el],
                                    noise[el])
            value[el] = kw * h[el]
        wa = m & (com == "water")
        if wa.any():  # [L] = 0.001 m3
            value[wa] = profiles.water_l(mo, base[wa] * 20, float(h[wa][0]),
                                         (noise[wa] + 1) / 2, np.ones(wa.sum(), np.float32))
            value[wa] /= 1000.0
        ga = m & (com == "gas")
        if ga.any():
            value[ga] = profiles.gas_l(mo, base[ga] * 50, zero[ga] + 20, float(h[ga][0]),
                                       noise[ga]) / 1000.0
    if open_since is not None and open_until is not None:
        off = (ends > open_since[r]) & (ends <= open_until[r])
        value[off & (com == "electric")] = 0.0
    raw = np.round(value * 1000).astype(np.int64)
    rt = np.array([READ_TYPE.get(c, "kwh_del") for c in com], object)
    t = pa.table({
        "meter_id": pa.array(ids, pa.string()),
        "reading_type": pa.array(rt, pa.string()),
        "interval_end": iso_times(ends),
        "value": decimal_text(raw, None, np.array([3], np.int64)),
        "quality": pa.nulls(len(r), pa.string()),
    })
    return _csv(CSV_HEADERS["reads"], t), len(r)


def _base_load(seed: int, meters: FleetMeters, rows: I64) -> npt.NDArray[np.float32]:
    """Each meter's mean load [kW] (water, gas: a scale), 0.3 to 2, from its id."""
    u = uniforms(seed, [f"meter:{m}" for m in meters.meter_id[rows].tolist()], 1)[:, 0]
    out: npt.NDArray[np.float32] = (0.3 + 1.7 * u).astype(np.float32)
    return out


def registers_csv(meters: FleetMeters, rows: I64, at_s: float, *, seed: int = 0
                  ) -> tuple[bytes, int]:
    """The canonical registers CSV of an on-demand read at ``at_s`` [Unix s]: each
    meter's total register (``kwh_del_total``, ``water_m3_total``, ``gas_m3_total``)
    read at ``at_s``: its mean load [kW] times the hours since 2020 (water 0.02 and gas
    0.05 m3 an hour per unit of it), plausible and increasing. Returns ``(csv bytes, rows)``."""
    if len(rows) == 0:
        return b"", 0
    com = meters.commodity[rows]
    hours = (at_s - 1_577_836_800.0) / 3600.0
    per_h = np.where(com == "electric", 1.0, np.where(com == "water", 0.02, 0.05))
    raw = np.round(_base_load(seed, meters, rows).astype(np.float64) * per_h * hours * 1000)
    t = pa.table({
        "meter_id": pa.array(meters.meter_id[rows], pa.string()),
        "register": pa.array([READ_TYPE.get(c, "kwh_del") + "_total" for c in com],
                             pa.string()),
        "read_time": iso_times(np.full(len(rows), int(at_s), np.int64)),
        "value": decimal_text(raw.astype(np.int64), None, np.array([3], np.int64)),
    })
    return _csv(CSV_HEADERS["registers"], t), len(rows)


def responses_csv(command_ids: Sequence[str], meter_ids: Sequence[str],
                  statuses: Sequence[str], times: Sequence[str],
                  details: Sequence[str] | None = None) -> bytes:
    """A ``command_responses`` upload (docs/commands.md, "Uplink")."""
    n = len(command_ids)
    t = pa.table({
        "command_id": pa.array(command_ids, pa.string()),
        "meter_id": pa.array(meter_ids, pa.string()),
        "status": pa.array(statuses, pa.string()),
        "time": pa.array(times, pa.string()),
        "detail": pa.array(details if details is not None else [""] * n, pa.string()),
    })
    return _csv(C.COMMAND_RESPONSE_HEADER, t)


def _csv(header: Sequence[str], t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(t, sink, pacsv.WriteOptions(include_header=False,
                                                quoting_style="none"))
    body: bytes = sink.getvalue().to_pybytes()
    return (",".join(header) + "\n").encode() + body


# --------------------------------------------------------------------------- truth


@dataclass(slots=True)
class Truth:
    """What the fleet did with one command (one row of the ground truth).

    Attributes
    ----------
    command_id, kind, meter_id, collector_id : str
    received_ms : int
        First receipt of its downlink line [Unix ms].
    receipts : int
        Times its line came (resends).
    expires_ms : int
        Its ``expires_at`` [Unix ms].
    action : str
        ``completed``, ``failed`` or ``none`` (no answer); ``pending`` while its answer
        waits for its latency.
    reason : str
        The failure reason; for ``none`` why: ``silent``, ``unpowered``, ``expired``
        (it came, or its latency ran, past ``expires_at``, so it was not executed) or
        ``upload_failed`` (its reads could not be uploaded, so no answer was sent).
    due_ms : int
        When it is (was) executed [Unix ms].
    answered_ms : int or None
        When its answer was uploaded [Unix ms].
    answers : int
        Response rows uploaded for it (2 for a duplicate answer, more after resends).
    reads : int
        Interval reads uploaded for it (an on-demand read).
    issued_ms : int
        Its ``issued_at`` (when the head end handed it over) [Unix ms].
    """

    command_id: str
    kind: str
    meter_id: str
    collector_id: str
    received_ms: int
    expires_ms: int
    due_ms: int
    action: str = "pending"
    reason: str = ""
    receipts: int = 1
    answered_ms: int | None = None
    answers: int = 0
    reads: int = 0
    issued_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def expected_state(t: Truth) -> tuple[str, str | None]:
    """The head end's final state and reason that ``t`` implies: completed; failed with
    the reason; expired for a command never answered (once its expiry passed)."""
    if t.action == "completed":
        return "completed", None
    if t.action == "failed":
        return "failed", t.reason
    return "expired", "expired"


def score(truth: Iterable[Truth], final: Mapping[str, tuple[str, str | None]]
          ) -> dict[str, Any]:
    """Compare the fleet's truth with the head end's final ``(state, reason)`` of each
    command. Returns ``{"commands", "matched", "by_action", "mismatches"}`` (mismatches:
    ``[(command_id, expected, found)]``; a command the head end does not know is found
    ``None``)."""
    n = matched = 0
    by_action: dict[str, int] = {}
    bad: list[tuple[str, tuple[str, str | None], tuple[str, str | None] | None]] = []
    for t in truth:
        n += 1
        by_action[t.action] = by_action.get(t.action, 0) + 1
        want, got = expected_state(t), final.get(t.command_id)
        if got == want:
            matched += 1
        else:
            bad.append((t.command_id, want, got))
    return {"commands": n, "matched": matched, "by_action": by_action, "mismatches": bad}
