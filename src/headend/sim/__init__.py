"""A seeded, deterministic, vectorised simulator of a utility and its collectors' uploads.

Same seed and arguments give identical tables and identical bytes on disk.

Public API
----------
* :func:`build_utility` -> :class:`Utility` (meters in :data:`~headend.model.schema.METERS`,
  topology, collectors with HMAC keys, customer classes, hourly weather);
* :func:`iter_uploads` -> one :class:`Upload` per interval boundary, unpacking as
  ``(cycle_time, reads, registers, events)`` (schemas ``READS``, ``REGISTERS``,
  ``EVENTS``), memory bounded by one cycle;
* :class:`Faults` and the scenario classes (:class:`Outage`, :class:`Momentary`,
  :class:`Storm`, :class:`CoverRemoved`, :class:`MagneticTamper`,
  :class:`ReverseEnergy`, :class:`VoltageExcursion`, :class:`WaterLeak`, :class:`Spike`,
  :class:`FlatLine`, :class:`Gap`, :class:`Duplicate`, :class:`Retransmission`,
  :class:`LateUpload`, :class:`ClockSkew`); ``Faults(...).resolve(utility)`` gives the
  :class:`FaultPlan` (incidents, events, ground truth);
* :func:`write_frames`, :func:`write_csv`, :func:`simulate` (everything into a folder).

Output folder of :func:`simulate` (``headend simulate``)
--------------------------------------------------------
``uploads/cycle-<YYYYMMDDTHHMM>.hef`` (frames of every collector for that upload cycle,
back to back), ``meters.csv``, ``collectors.csv`` (hex keys), ``reads.csv``,
``registers.csv``, ``events.csv`` (canonical CSVs), ``customers.csv``
(``meter_id,customer_class``), ``transformer_ratings.csv``
(``transformer_id,rating_kva``), ``weather.csv``
(``time,temperature_c``), ``ground_truth.parquet`` and ``utility.json``.

Ground truth (``ground_truth.parquet``, :data:`GROUND_TRUTH`)
-----------------------------------------------------------
One row per injected incident:

=============  ==================  ===================================================
column         type                meaning
=============  ==================  ===================================================
fault_id       int32               0.. in injection order
kind           string              outage, momentary, cover_removed, magnetic_tamper,
                                   reverse_energy, under_voltage, over_voltage,
                                   water_leak, spike, flat_line, gap, duplicate,
                                   retransmission, late_upload, clock_skew
level          string              meter, transformer, feeder, substation, collector
device_id      string              meter_id, transformer/feeder/substation id, or
                                   collector_id
start, end     timestamp[s, UTC]   the incident's span ``[start, end)``; for spike,
                                   flat_line and gap ``(start, end]`` are the affected
                                   interval ends; cover_removed lasts 1 s; for
                                   duplicate/retransmission ``start`` is the original
                                   upload cycle and ``end`` the resend's; late_upload's
                                   ``end`` is the delivery cycle
n_meters       int32               meters affected
meter_idx      list<int32>         the affected meters (``meter_idx``)
meter_ids      list<string>        the same as ``meter_id``
events_sent    int32               events the incident made meters send (those
                                   timed after the simulated days are never uploaded);
                                   for outages, the gasps and restorations it opens
                                   or closes (see below)
events_lost    int32               events lost in the network (never delivered)
detail         string (JSON)       gasp_loss, restore_loss, storm (outage); factor
                                   (spike, magnetic_tamper); delta_v [V] (voltage);
                                   rate_lph [L/h] (water_leak); skew_s [s]
                                   (clock_skew); collector (index) for collector kinds
=============  ==================  ===================================================

What the data shows for each kind: *outage/momentary*: last gasps 3.26.0.85 at
``start`` (0-2 s jitter) and restorations 3.26.0.216 at ``end`` (0-29 s), minus the
lost share; no interval reads and zero energy for intervals wholly inside, quality
1.2.32 on partial ones; no register read if out at midnight. Where outages overlap in
the topology (a transformer out inside its feeder's outage, a meter inside its
transformer's), the data follows each meter's power, the *union* of every outage
covering it (its own, its transformer's, feeder's and substation's; see
:class:`~headend.sim.faults.PowerOff`): one gasp when it loses power (the earliest
start), none while already dark, one restoration when power is back (the end of the
latest covering outage), and no reads for intervals wholly inside the union. The
ground truth keeps one row per injected outage with its own ``start``/``end``; each
gasp (restoration) is counted in ``events_sent``/``events_lost`` of the outage that
opens (closes) the meter's dark span, with that outage's loss share, so an outage
wholly inside another sends nothing. *cover_removed*,
*magnetic_tamper*, *reverse_energy*: event at ``start``; tamper (1.3.0) or reverse
(1.3.1) quality on the affected intervals; magnetic tamper scales ``kwh_del`` by
``factor``; reverse energy zeroes ``kwh_del`` (PV meters: moves it to ``kwh_rec``).
*under/over_voltage*: volts shifted by ``delta_v``, two-way meters send
3.26.131.223/.248 at ``start`` (0-59 s). *water_leak*: extra ``rate_lph`` flow, event
8.31.0.93 at ``start`` + 24 h. *spike*: one ``kwh_del`` x ``factor``. *flat_line*:
``kwh_del`` repeats one value. *gap*: no reads or registers (events still arrive).
*clock_skew*: event and register times shifted by ``skew_s`` (interval ends stay on
the grid). Collector kinds change delivery only: rows re-sent (duplicate: same rows in
an unflagged frame; retransmission: frame flag ``FLAG_RETRANSMISSION``) or held and
delivered at ``end`` newest first.
"""

from __future__ import annotations

from headend.sim.engine import Upload, iter_uploads
from headend.sim.faults import GROUND_TRUTH, FaultPlan, Faults
from headend.sim.scenarios import (
    SCENARIOS,
    ClockSkew,
    CoverRemoved,
    Duplicate,
    FlatLine,
    Gap,
    Incident,
    LateUpload,
    MagneticTamper,
    Momentary,
    Outage,
    Retransmission,
    ReverseEnergy,
    Scenario,
    Spike,
    Storm,
    VoltageExcursion,
    WaterLeak,
)
from headend.sim.utility import Utility, build_utility
from headend.sim.writers import simulate, write_csv, write_frames

__all__ = [
    "GROUND_TRUTH",
    "SCENARIOS",
    "ClockSkew",
    "CoverRemoved",
    "Duplicate",
    "FaultPlan",
    "Faults",
    "FlatLine",
    "Gap",
    "Incident",
    "LateUpload",
    "MagneticTamper",
    "Momentary",
    "Outage",
    "Retransmission",
    "ReverseEnergy",
    "Scenario",
    "Spike",
    "Storm",
    "Upload",
    "Utility",
    "VoltageExcursion",
    "WaterLeak",
    "build_utility",
    "iter_uploads",
    "simulate",
    "write_csv",
    "write_frames",
]
