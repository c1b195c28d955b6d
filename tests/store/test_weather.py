import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ValidationError
from headend.model.schema import TS, WEATHER
from headend.store import WeatherStore

T0 = 1_704_067_200


def w(times, temps, zones=None):
    cols = {"time": pa.array(np.asarray(times, np.int64)).cast(TS), "temperature_c": temps}
    if zones is not None:
        cols["zone"] = pa.array(zones, pa.string())
    return pa.table(cols)


def test_append_dedups_on_zone_and_time_first_wins(tmp_path):
    ws = WeatherStore(tmp_path)
    r = ws.append(w([T0, T0 + 3600, T0], [1.0, 2.0, 9.0]))
    assert (r.accepted, r.duplicate) == (2, 1)
    r = ws.append(w([T0 + 3600, T0 + 7200], [5.0, 3.0]))
    assert (r.accepted, r.duplicate) == (1, 1)
    r = ws.append(w([T0], [4.0], zones=["north"]))
    assert (r.accepted, r.duplicate) == (1, 0)
    t = ws.load()
    assert t.schema.equals(WEATHER)
    assert t.to_pydict() == {
        "zone": ["", "", "", "north"],
        "time": [dt.datetime.fromtimestamp(x, dt.UTC) for x in (T0, T0 + 3600, T0 + 7200, T0)],
        "temperature_c": [1.0, 2.0, 3.0, 4.0]}
    assert ws.load(zone="north", start=T0, end=T0 + 1).num_rows == 1
    assert ws.load(zone="", start=T0 + 3600).column("temperature_c").to_pylist() == [2.0, 3.0]
    # durable, published files only: no temp files are left behind
    assert sorted(p.name.startswith("part-") for p in (tmp_path / "weather").iterdir()
                  if p.name != ".lock") == [True, True, True]


def test_null_zone_is_the_empty_zone(tmp_path):
    ws = WeatherStore(tmp_path)
    ws.append(w([T0], [1.0], zones=[None]))
    assert ws.append(w([T0], [2.0])).duplicate == 1


def test_naive_times_are_rejected(tmp_path):
    t = pa.table({"time": pa.array([T0], pa.int64()).cast(pa.timestamp("s")),
                  "temperature_c": [1.0]})
    with pytest.raises(ValidationError):
        WeatherStore(tmp_path).append(t)


def test_load_of_an_empty_store(tmp_path):
    assert WeatherStore(tmp_path).load().num_rows == 0
