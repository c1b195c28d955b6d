"""A synthetic utility: meters, grid topology, collectors, customers and weather.

Everything is drawn from one seed with NumPy in a handful of vectorised steps, so a
4-million-meter utility builds in seconds. Meters are numbered in topology order
(substation > feeder > transformer), electric meters first, then water, then gas
meters (which carry no electric topology), so a feeder's meters form one contiguous
``meter_idx`` range.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.errors import ConfigError
from headend.model.codes import Commodity, Technology
from headend.model.schema import METERS, TS

__all__ = [
    "COLLECTOR_BASE",
    "CUSTOMER_CLASSES",
    "SERIAL_BASE",
    "MeterParams",
    "Utility",
    "build_utility",
]

#: customer class codes (``uint8``) -> name
CUSTOMER_CLASSES: Final = ("residential", "commercial", "industrial")
#: meter serial = SERIAL_BASE + meter_idx; meter_id is its decimal string
SERIAL_BASE: Final = 100_000_000
#: collector number = COLLECTOR_BASE + collector index; collector_id is its decimal string
COLLECTOR_BASE: Final = 7_000_000
#: distribution transformer ratings [kVA]
KVA_SIZES: Final = np.array([10, 15, 25, 37.5, 50, 75, 100, 167, 250, 333, 500, 750, 1000, 1500])
#: meters a collector (RF access point / PLC concentrator) serves, on average
METERS_PER_COLLECTOR: Final = 2000
#: share of meters talking over cellular (GPRS), each its own collector
GPRS_SHARE: Final = 0.002

NETWORKS: Final = ("rf", "plc")
INTERVALS_S: Final = (300, 900, 3600)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class MeterParams:
    """Per-meter load-model parameters (arrays indexed by ``meter_idx``).

    Attributes
    ----------
    base_kw : float32[n]
        Mean non-weather load [kW] (electric), mean flow [L/h] (water, gas).
    heat_kw, cool_kw : float32[n]
        Load per heating / cooling degree [kW/K] (gas: heating only, [L/h/K]).
    solar_kw : float32[n]
        PV capacity [kW]; 0 without solar.
    volt_offset : float32[n]
        Steady offset of the meter's voltage from its feeder's [V].
    register_start : int64[n]
        Register at the start of the simulation, in the register resolution.
    """

    base_kw: F32
    heat_kw: F32
    cool_kw: F32
    solar_kw: F32
    volt_offset: F32
    register_start: I64


@dataclass(frozen=True, eq=False)
class Utility:
    """A simulated utility (build it with :func:`build_utility`).

    Attributes
    ----------
    meters : pyarrow.Table
        The registry, schema :data:`headend.model.schema.METERS`.
    customer_class : uint8[n]
        Index into :data:`CUSTOMER_CLASSES` per meter.
    transformers, feeders, substations : pyarrow.Table
        Topology: ``<level>_id``, parent ids, ``first_meter``, ``n_meters`` (a contiguous
        ``meter_idx`` range of electric meters); transformers also carry ``kva``.
    collectors : pyarrow.Table
        ``collector_id`` (decimal string), ``collector_num`` (uint32, on the wire),
        ``technology`` (uint8), ``hmac_key`` (32 bytes), ``n_meters``.
    weather : pyarrow.Table
        Hourly ``time`` (UTC), ``temperature_c`` [degC] covering the simulated days.
    meter_collector, meter_transformer, meter_feeder, meter_substation : int32[n]
        Index of the meter's collector and grid devices (-1: none, water/gas).
    """

    seed: int
    network: str
    interval_s: int
    start: dt.datetime
    days: int
    utc_offset_h: float
    meters: pa.Table
    customer_class: npt.NDArray[np.uint8]
    transformers: pa.Table
    feeders: pa.Table
    substations: pa.Table
    collectors: pa.Table
    weather: pa.Table
    meter_collector: I32
    meter_transformer: I32
    meter_feeder: I32
    meter_substation: I32
    params: MeterParams
    n_electric: int
    n_water: int
    n_gas: int

    @property
    def n_meters(self) -> int:
        return int(self.meters.num_rows)

    @property
    def start_s(self) -> int:
        """Start of the simulation [Unix s]."""
        return int(self.start.timestamp())

    @property
    def end_s(self) -> int:
        """End of the simulation [Unix s] (exclusive for instants, inclusive for interval ends)."""
        return self.start_s + self.days * 86_400

    @property
    def n_cycles(self) -> int:
        """Upload cycles (one per interval boundary)."""
        return self.days * 86_400 // self.interval_s

    @property
    def solar_idx(self) -> I32:
        """``meter_idx`` of the meters with PV (ascending)."""
        return np.flatnonzero(self.params.solar_kw > 0).astype(np.int32)

    def collector_keys(self) -> dict[int, bytes]:
        """Collector number -> HMAC key, for :func:`headend.wire.frame.decode_frame`."""
        nums = self.collectors.column("collector_num").to_numpy()
        keys = self.collectors.column("hmac_key").to_pylist()
        return {int(n): bytes(k) for n, k in zip(nums, keys, strict=True)}

    def temperature_at(self, t_s: I64 | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Air temperature [degC] at Unix times ``t_s`` (linear between hours)."""
        times = self.weather.column("time").cast(pa.int64()).to_numpy()
        temps = self.weather.column("temperature_c").to_numpy()
        out: npt.NDArray[np.float64] = np.interp(np.asarray(t_s, dtype=np.float64), times, temps)
        return out


def _split(n_items: int, n_groups: int, rng: np.random.Generator, shape: float) -> I64:
    """Random group sizes >= 1 summing to ``n_items`` (gamma-weighted multinomial)."""
    n_groups = max(1, min(n_groups, n_items))
    w = rng.gamma(shape, size=n_groups)
    extra = rng.multinomial(n_items - n_groups, w / w.sum())
    return (extra + 1).astype(np.int64)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    nums = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(nums, width, "0"), "")


def _starts(sizes: I64) -> I64:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _weather(start: dt.datetime, days: int, rng: np.random.Generator) -> pa.Table:
    """Hourly temperature: seasonal + diurnal cycle + a slow weather-front random walk."""
    t0 = int(start.timestamp()) - 86_400
    hours = (days + 2) * 24 + 1
    t = t0 + 3600 * np.arange(hours, dtype=np.int64)
    doy = (t - 946_684_800) / 86_400.0 % 365.2425
    hod = (t % 86_400) / 3600.0
    seasonal = 11.0 - 10.0 * np.cos(2 * np.pi * (doy - 20.0) / 365.2425)
    diurnal = -4.0 * np.cos(2 * np.pi * (hod - 3.0) / 24.0)
    # AR(1) fronts with a ~2-day memory, plus hourly noise
    shocks = rng.normal(0.0, 0.6, hours)
    front = np.zeros(hours)
    a = np.exp(-1.0 / 48.0)
    for i in range(1, hours):  # once per hour of weather, not per read
        front[i] = a * front[i - 1] + shocks[i]
    temp = np.round(seasonal + diurnal + front + rng.normal(0.0, 0.3, hours), 1)
    return pa.table({"time": pa.array(t, TS), "temperature_c": pa.array(temp, pa.float64())})


def build_utility(
    n_meters: int,
    *,
    seed: int = 0,
    network: str = "rf",
    interval_s: int = 900,
    water_share: float = 0.05,
    gas_share: float = 0.03,
    solar_share: float = 0.08,
    start: dt.date | dt.datetime = dt.date(2026, 1, 5),
    days: int = 1,
    utc_offset_h: float = 0.0,
    meters_per_collector: int = METERS_PER_COLLECTOR,
    gprs_share: float = GPRS_SHARE,
) -> Utility:
    """Build a seeded, deterministic utility.

    Parameters
    ----------
    n_meters : int
        Total meters (electric + water + gas), >= 1.
    seed : int
        Seed of every random draw; same seed and arguments give the same utility.
    network : {"rf", "plc"}
        Technology of the AMI network (a ``gprs_share`` of meters use GPRS).
    interval_s : {300, 900, 3600}
        Interval length [s] of every meter.
    water_share, gas_share : float
        Shares of water and gas meters; the rest are electric.
    solar_share : float
        Share of residential and commercial electric meters with PV (``kwh_rec``).
    start : date or datetime
        First simulated day (midnight UTC).
    days : int
        Simulated days (>= 1).
    utc_offset_h : float
        Offset of the utility's local time from UTC [h]; load shapes follow local time.
    meters_per_collector : int
        Meters per collector (contiguous ``meter_idx`` blocks).
    gprs_share : float
        Share of meters with a GPRS modem (each its own collector).

    Returns
    -------
    Utility

    Raises
    ------
    ConfigError
        On an out-of-range argument.
    """
    if n_meters < 1:
        raise ConfigError("n_meters must be >= 1")
    if network not in NETWORKS:
        raise ConfigError(f"network must be one of {NETWORKS}, not {network!r}")
    if interval_s not in INTERVALS_S:
        raise ConfigError(f"interval_s must be one of {INTERVALS_S}, not {interval_s}")
    if days < 1:
        raise ConfigError("days must be >= 1")
    if not (0 <= water_share and 0 <= gas_share and water_share + gas_share < 1):
        raise ConfigError("water_share and gas_share must be >= 0 and sum below 1")
    if isinstance(start, dt.datetime):
        start = start.astimezone(dt.UTC) if start.tzinfo else start.replace(tzinfo=dt.UTC)
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)

    ss = np.random.SeedSequence([seed, 0x5EED])
    r_topo, r_meter, r_coll, r_key, r_weather = (np.random.default_rng(s) for s in ss.spawn(5))

    n_water = round(n_meters * water_share)
    n_gas = round(n_meters * gas_share)
    n_elec = n_meters - n_water - n_gas
    if n_elec < 1:
        raise ConfigError("at least one electric meter is needed")

    # ---- topology (electric meters only): transformer sizes, then contiguous groupings
    n_tx = max(1, round(n_elec / 8))
    tx_sizes = _split(n_elec, n_tx, r_topo, 2.0)
    n_tx = len(tx_sizes)
    n_fd = max(1, min(n_tx, round(n_elec / 2500)))
    fd_ntx = _split(n_tx, n_fd, r_topo, 8.0)
    n_fd = len(fd_ntx)
    n_sb = max(1, min(n_fd, round(n_elec / 20000)))
    sb_nfd = _split(n_fd, n_sb, r_topo, 8.0)
    n_sb = len(sb_nfd)
    tx_feeder = np.repeat(np.arange(n_fd, dtype=np.int32), fd_ntx)
    fd_sub = np.repeat(np.arange(n_sb, dtype=np.int32), sb_nfd)
    m_tx = np.repeat(np.arange(n_tx, dtype=np.int32), tx_sizes)
    m_fd = tx_feeder[m_tx]
    m_sb = fd_sub[m_fd]

    # ---- customers: industrial/commercial sit alone or few on a transformer
    cls = np.zeros(n_meters, np.uint8)
    u = r_meter.random(n_elec)
    solo = tx_sizes[m_tx] <= 2
    cls[:n_elec] = np.where(solo & (u < 0.25), 2, np.where(u < 0.10, 1, 0))
    cls[n_elec:] = np.where(r_meter.random(n_water + n_gas) < 0.08, 1, 0)
    base_by_cls = np.array([0.55, 4.0, 60.0], np.float32)  # [kW]
    spread = r_meter.lognormal(0.0, 0.35, n_meters).astype(np.float32)
    base = base_by_cls[cls] * spread
    heat = np.zeros(n_meters, np.float32)
    cool = np.zeros(n_meters, np.float32)
    heat[:n_elec] = base[:n_elec] * r_meter.uniform(0.0, 0.12, n_elec).astype(np.float32)
    cool[:n_elec] = base[:n_elec] * r_meter.uniform(0.02, 0.15, n_elec).astype(np.float32)
    # water [L/h] and gas [L/h] base flows and gas heating slope
    wlo, whi = n_elec, n_elec + n_water
    base[wlo:whi] = np.where(cls[wlo:whi] == 1, 60.0, 12.0) * spread[wlo:whi]
    base[whi:] = np.where(cls[whi:] == 1, 120.0, 25.0) * spread[whi:]
    heat[whi:] = base[whi:] * r_meter.uniform(0.15, 0.35, n_gas).astype(np.float32)
    solar = np.zeros(n_meters, np.float32)
    has_pv = (r_meter.random(n_elec) < solar_share) & (cls[:n_elec] < 2)
    solar[:n_elec] = np.where(has_pv, r_meter.uniform(3.0, 9.0, n_elec) * (1 + 4 * cls[:n_elec]), 0)
    volt_off = np.zeros(n_meters, np.float32)
    volt_off[:n_elec] = r_meter.normal(0.0, 1.5, n_elec).astype(np.float32)
    reg0 = (r_meter.uniform(1e6, 5e7, n_meters) * (1 + 9 * (cls == 2))).astype(np.int64)

    kw_on_tx = np.bincount(m_tx, weights=base[:n_elec] * 2.5, minlength=n_tx)
    kva = KVA_SIZES[np.minimum(np.searchsorted(KVA_SIZES, kw_on_tx), len(KVA_SIZES) - 1)]

    # ---- technology, two-way, collectors (contiguous blocks + one per GPRS meter)
    idx = np.arange(n_meters, dtype=np.int64)
    gprs = r_coll.random(n_meters) < gprs_share
    net_tech = Technology.RF if network == "rf" else Technology.PLC
    tech = np.where(gprs, Technology.GPRS, net_tech).astype(np.uint8)
    one_way_share = 0.12 if network == "rf" else 0.02
    two_way = gprs | (r_coll.random(n_meters) >= one_way_share)
    n_blocks = max(1, -(-n_meters // meters_per_collector))
    block = idx * n_blocks // n_meters
    gprs_rank = np.cumsum(gprs) - 1
    m_coll = np.where(gprs, n_blocks + gprs_rank, block).astype(np.int32)
    n_coll = n_blocks + int(gprs.sum())
    coll_num = (COLLECTOR_BASE + np.arange(n_coll)).astype(np.uint32)
    coll_tech = np.full(n_coll, net_tech, np.uint8)
    coll_tech[n_blocks:] = Technology.GPRS
    key_bytes = r_key.bytes(32 * n_coll)
    keys = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), n_coll, [None, pa.py_buffer(key_bytes)]
    )
    collectors = pa.table({
        "collector_id": pc.cast(pa.array(coll_num), pa.string()),
        "collector_num": pa.array(coll_num),
        "technology": pa.array(coll_tech),
        "hmac_key": keys.cast(pa.binary()),
        "n_meters": pa.array(np.bincount(m_coll, minlength=n_coll).astype(np.int32)),
    })

    m_tx_all = np.full(n_meters, -1, np.int32)
    m_fd_all = np.full(n_meters, -1, np.int32)
    m_sb_all = np.full(n_meters, -1, np.int32)
    m_tx_all[:n_elec], m_fd_all[:n_elec], m_sb_all[:n_elec] = m_tx, m_fd, m_sb
    tx_ids, fd_ids, sb_ids = _ids("T", n_tx, 7), _ids("F", n_fd, 5), _ids("S", n_sb, 3)

    def ids_for(ids: pa.Array, m: I32) -> pa.Array:
        return pc.take(ids, pa.array(m, mask=m < 0))

    commodity = np.full(n_meters, Commodity.ELECTRIC, np.uint8)
    commodity[wlo:whi] = Commodity.WATER
    commodity[whi:] = Commodity.GAS
    serial = (SERIAL_BASE + idx).astype(np.uint64)
    meters = pa.table({
        "meter_idx": pa.array(idx.astype(np.int32)),
        "meter_id": pc.cast(pa.array(serial), pa.string()),
        "serial": pa.array(serial),
        "commodity": pa.array(commodity),
        "technology": pa.array(tech),
        "two_way": pa.array(two_way),
        "collector_id": pc.take(collectors.column("collector_id"), pa.array(m_coll)),
        "transformer_id": ids_for(tx_ids, m_tx_all),
        "feeder_id": ids_for(fd_ids, m_fd_all),
        "substation_id": ids_for(sb_ids, m_sb_all),
        "interval_s": pa.array(np.full(n_meters, interval_s, np.int32)),
    }, schema=METERS)

    tx_first = _starts(tx_sizes)
    fd_first_tx = _starts(fd_ntx)
    fd_first = tx_first[fd_first_tx]
    fd_n = np.add.reduceat(tx_sizes, fd_first_tx)
    sb_first_fd = _starts(sb_nfd)
    transformers = pa.table({
        "transformer_id": tx_ids, "feeder_id": pc.take(fd_ids, pa.array(tx_feeder)),
        "substation_id": pc.take(sb_ids, pa.array(fd_sub[tx_feeder])),
        "kva": pa.array(kva.astype(np.float64)),
        "first_meter": pa.array(tx_first.astype(np.int32)),
        "n_meters": pa.array(tx_sizes.astype(np.int32)),
    })
    feeders = pa.table({
        "feeder_id": fd_ids, "substation_id": pc.take(sb_ids, pa.array(fd_sub)),
        "first_meter": pa.array(fd_first.astype(np.int32)),
        "n_meters": pa.array(fd_n.astype(np.int32)),
    })
    substations = pa.table({
        "substation_id": sb_ids,
        "first_meter": pa.array(fd_first[sb_first_fd].astype(np.int32)),
        "n_meters": pa.array(np.add.reduceat(fd_n, sb_first_fd).astype(np.int32)),
    })
    return Utility(
        seed=seed, network=network, interval_s=interval_s, start=start, days=days,
        utc_offset_h=utc_offset_h, meters=meters, customer_class=cls,
        transformers=transformers, feeders=feeders, substations=substations,
        collectors=collectors, weather=_weather(start, days, r_weather),
        meter_collector=m_coll, meter_transformer=m_tx_all, meter_feeder=m_fd_all,
        meter_substation=m_sb_all,
        params=MeterParams(base, heat, cool, solar.astype(np.float32), volt_off, reg0),
        n_electric=n_elec, n_water=n_water, n_gas=n_gas,
    )
