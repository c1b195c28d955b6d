"""Benchmark of the durable command store: insert rate, transition rate, bytes on disk.

Builds ``--commands`` commands (default 1M) of realistic shape (random 16-character
base32 ids, as ``headend command send`` makes without ``--id``; 11-character meter ids; a kind mix of
70 % read, 15 % ping, 10 % disconnect, 5 % connect; 2 % rejected; a detail on 10 %), and
measures:

* ``put`` rate [commands/s] in batches of ``--batch`` (one transaction, fsynced, each);
* ``transition`` rate [changes/s] over ``--transitions`` single changes (each its own
  fsynced transaction, as a collector's answers arrive one by one);
* bytes on disk (database + WAL after a checkpoint) of the 1M commands as created, then
  after every queued command went sent -> delivered -> completed, three more audit
  records each (by ``SqliteCommandStore.transition_many``, ``--batch`` changes per
  transaction: the same code as :meth:`transition`, fewer fsyncs);
* ``list`` by state and by meter, and ``get``, latencies.

Run::

    python bench/bench_commands.py                        # 1M commands, ~2-3 min
    python bench/bench_commands.py --commands 100000 --json bench/out/commands.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from headend.commands import Command, SqliteCommandStore
from headend.model import commands as C

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]
KINDS = ("read", "ping", "disconnect", "connect")
KIND_P = (0.70, 0.15, 0.10, 0.05)


def make(n: int, seed: int, start: int = 0) -> list[Command]:
    rng = np.random.default_rng(seed)
    ids = [base64.b32encode(bytes(b)).decode().lower()
           for b in rng.integers(0, 256, (n, 10), dtype=np.uint8)]
    kinds = rng.choice(len(KINDS), n, p=KIND_P)
    meters = rng.integers(0, 4_000_000, n)
    rejected = rng.random(n) < 0.02
    detailed = rng.random(n) < 0.10
    out = []
    for i in range(n):
        k = KINDS[kinds[i]]
        t = T0 + (start + i) * 5
        out.append(Command(
            ids[i], k, f"MTR{meters[i]:08d}", "rejected" if rejected[i] else "queued",
            "meter_one_way" if rejected[i] else None,
            "customer called" if detailed[i] else None, "ops", t, t,
            t + 1000 * C.KIND_BY_NAME[k].expires_s, f"{1000 + meters[i] % 4000}",
            C.control_code(k, 0)))
    return out


def size(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--transitions", type=int, default=2_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(dir=args.dir)
    path = Path(tmp) / "commands" / "commands.sqlite"
    store = SqliteCommandStore(path)
    out: dict[str, float | int] = {"commands": args.commands}

    t_make = t_put = 0.0
    for start in range(0, args.commands, args.batch):
        n = min(args.batch, args.commands - start)
        t = time.perf_counter()
        cmds = make(n, start, start)
        t_make += time.perf_counter() - t
        t = time.perf_counter()
        store.put(cmds)
        t_put += time.perf_counter() - t
    out["put_per_s"] = round(args.commands / t_put)
    out["put_s"] = round(t_put, 1)
    out["bytes_queued"] = size(path)

    # idempotent re-put of one batch: answered from the store, nothing written
    again = make(min(args.batch, args.commands), 0, 0)
    t = time.perf_counter()
    store.put(again)
    out["reput_per_s"] = round(len(again) / (time.perf_counter() - t))

    queued = [c.command_id for c in store.list(state="queued", limit=args.transitions)]
    t = time.perf_counter()
    for i, cid in enumerate(queued):
        store.transition(cid, "sent", actor="headend", at_ms=T0 + 10**9 + i)
    out["transition_per_s"] = round(len(queued) / (time.perf_counter() - t))

    lat: dict[str, list[float]] = {"get": [], "list_meter": []}
    rng = np.random.default_rng(7)
    sample = store.list(limit=1000)
    for c in (sample[int(i)] for i in rng.integers(0, len(sample), 200)):
        t = time.perf_counter()
        store.get(c.command_id)
        lat["get"].append(time.perf_counter() - t)
        t = time.perf_counter()
        store.list(meter_id=c.meter_id)
        lat["list_meter"].append(time.perf_counter() - t)
    for k, v in lat.items():
        out[f"{k}_p50_ms"] = round(1000 * statistics.median(v), 3)
    t = time.perf_counter()
    n_sent = len(store.list(state="sent"))
    out["list_state_ms"] = round(1000 * (time.perf_counter() - t), 1)
    assert n_sent == len(queued)
    store.close()

    # every queued command through sent, delivered and completed (batched transactions)
    store = SqliteCommandStore(path)
    t = time.perf_counter()
    changes = 0
    for state in ("sent", "delivered", "completed"):
        frm = {"sent": "queued", "delivered": "sent", "completed": "delivered"}[state]
        ids = [c.command_id for c in store.list(state=frm)]
        actor = "headend" if state == "sent" else "collector-1000"
        for i in range(0, len(ids), args.batch):
            store.transition_many([(cid, state, actor, T0 + 2 * 10**9, None, None)
                                   for cid in ids[i:i + args.batch]])
        changes += len(ids)
    out["batched_changes_per_s"] = round(changes / (time.perf_counter() - t))
    store.close()
    out["bytes_completed"] = size(path)
    out["bytes_per_command"] = round(out["bytes_completed"] / args.commands, 1)
    for k, v in out.items():
        print(f"{k:>20}  {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
