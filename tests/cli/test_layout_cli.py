"""Every verb and process reads the data directory's recorded layout (issue 10, point 5).

The failure found from outside: a store written by ``serve --bucket-bits 6 --partitions
4`` and read by ``headend export reads`` (16 bits assumed) showed one bucket in 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.cli.common import EXIT_USAGE
from headend.errors import ConfigError
from headend.serve.config import load_config, with_store_layout
from headend.serve.router import Router
from headend.serve.service import Service
from headend.store import DataDir, StoreConfig
from headend.store._storelayout import LAYOUT_FILE, read_layout
from headend.store.config import PARTITIONED_BUCKET_BITS

_register()
runner = CliRunner()

N_METERS = 300  # 5 buckets of 64 meters
HOURS = 4
HEADER = "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id\n"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    meters = tmp_path / "meters.csv"
    meters.write_text(HEADER + "".join(
        f"M-{i:04d},electric,rf,true,1,T{i // 8},F{i // 100},S1\n" for i in range(N_METERS)))
    reads = tmp_path / "reads.csv"
    reads.write_text("meter_id,reading_type,interval_end,value,quality\n" + "".join(
        f"M-{i:04d},kwh_del,2026-01-01T{h:02d}:00:00Z,{i % 7}.5,\n"
        for h in range(1, HOURS + 1) for i in range(N_METERS)))
    return meters, reads


def _store_6_bits_4_partitions(data: Path, meters: Path, reads: Path) -> None:
    """What ``serve --bucket-bits 6 --partitions 4`` creates, then fills."""
    cfg = with_store_layout(load_config(env={}, data=data, bucket_bits=6, partitions=4))
    assert (cfg.bucket_bits, cfg.partitions) == (6, 4)
    res = runner.invoke(app, ["ingest", "--data", str(data), "--no-vee", "--no-rules",
                              "--json", str(meters), str(reads)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accepted"] == N_METERS * HOURS
    assert len(list((data / "reads").glob("b=*"))) == 5


def test_export_reads_a_6_bit_store_whole_without_flags(
        tmp_path: Path, files: tuple[Path, Path]) -> None:
    data = tmp_path / "data"
    _store_6_bits_4_partitions(data, *files)
    res = runner.invoke(app, ["export", "reads", "--data", str(data),
                              "--version", "original"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()[1:]
    assert len(lines) == N_METERS * HOURS
    assert {ln.split(",")[0] for ln in lines} == {f"M-{i:04d}" for i in range(N_METERS)}


def test_disagreeing_bucket_bits_is_refused_with_exit_2(
        tmp_path: Path, files: tuple[Path, Path]) -> None:
    data = tmp_path / "data"
    _store_6_bits_4_partitions(data, *files)
    before = sorted(p.name for p in (data / "reads").glob("b=*/y=*/*"))
    res = runner.invoke(app, ["ingest", "--data", str(data), "--bucket-bits", "16",
                              "--no-vee", str(files[1])])
    assert res.exit_code == EXIT_USAGE == 2
    assert res.stderr.startswith("headend: bucket_bits 16 asked for, but the store at ")
    assert "has bucket_bits 6" in res.stderr and len(res.stderr.splitlines()) == 1
    assert sorted(p.name for p in (data / "reads").glob("b=*/y=*/*")) == before
    res = runner.invoke(app, ["ingest", "--data", str(data), "--bucket-bits", "6",
                              "--no-vee", "--json", str(files[1])])  # agreeing: accepted
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["duplicate"] == N_METERS * HOURS


def test_legacy_store_is_read_with_16_bits_and_gets_its_layout(
        tmp_path: Path, files: tuple[Path, Path]) -> None:
    data = tmp_path / "data"
    res = runner.invoke(app, ["ingest", "--data", str(data), "--no-vee", *map(str, files)])
    assert res.exit_code == 0, res.output
    (data / LAYOUT_FILE).unlink()  # a store written before layouts were recorded
    res = runner.invoke(app, ["export", "reads", "--data", str(data),
                              "--version", "original"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 1 + N_METERS * HOURS
    lay = read_layout(data)
    assert lay is not None and (lay.bucket_bits, lay.partitions, lay.origin) == (
        16, None, "migrated")


def test_small_fleet_spreads_over_the_partitions(tmp_path: Path) -> None:
    """A new store of a scale-out process: 2,000 meters reach every one of 4 partitions."""
    cfg = with_store_layout(load_config(env={}, data=tmp_path / "d", bus="nats://127.0.0.1:1",
                                        partitions=4))
    assert (cfg.bucket_bits, cfg.partitions) == (PARTITIONED_BUCKET_BITS, 4)
    ids = [f"M-{i:05d}" for i in range(2000)]
    router = Router(cfg.partitions, cfg.bucket_bits or 0, lambda _c: None,
                    lambda s: np.asarray(s, np.int32),
                    lambda a: np.array([int(x[2:]) for x in a.to_pylist()], np.int32))
    body = ("meter_id,reading_type,interval_end,value,quality\n" + "".join(
        f"{m},kwh_del,2026-01-01T01:00:00Z,1.0,\n" for m in ids)).encode()
    parts = router.split_csv(body)
    assert len(parts) >= 3
    assert sum(p.rows for p in parts) == 2000
    assert min(p.rows for p in parts) >= 2000 // 8  # no partition starved


def test_serve_and_worker_take_the_layout_from_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with DataDir.open(data, config=StoreConfig(bucket_bits=6, partitions=4)):
        pass
    svc = Service(load_config(env={}, data=data))  # embedded: no flags given
    try:
        assert (svc.cfg.bucket_bits, svc.cfg.partitions) == (6, 4)
        assert svc.uplink is not None
        assert (svc.uplink.router.bucket_bits, svc.uplink.router.partitions) == (6, 4)
        assert svc.host.data.store.config.bits == 6
        assert all(w.config.partitions == 4 for w in svc.workers)
    finally:
        svc.close()
    with pytest.raises(ConfigError, match="partitions 8 asked for"):
        Service(load_config(env={"HEADEND_PARTITIONS": "8"}, data=data))
    with pytest.raises(ConfigError, match="bucket_bits 10 asked for"):
        with_store_layout(load_config(env={}, data=data, bus="nats://127.0.0.1:1",
                                      bucket_bits=10))
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(f"data: {data}\nbucket_bits: 6\npartitions: 4\n")
    assert with_store_layout(load_config(cfg_file, env={})).bucket_bits == 6


@pytest.mark.service("nats")
def test_worker_process_refuses_other_partitions(tmp_path: Path) -> None:
    """``headend worker --partitions 8`` on a 4-partition store exits 2 before it
    consumes anything, and the recorded layout is unchanged."""
    data = tmp_path / "data"
    with DataDir.open(data, config=StoreConfig(bucket_bits=6, partitions=4)):
        pass
    res = runner.invoke(app, ["worker", "--data", str(data), "--nats",
                              "nats://127.0.0.1:4222", "--partitions", "8"])
    assert res.exit_code == EXIT_USAGE, res.output
    assert "partitions 8 asked for" in res.stderr and "records partitions 4" in res.stderr
    assert json.loads((data / LAYOUT_FILE).read_text())["partitions"] == 4
