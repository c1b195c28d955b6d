"""The rules' dense topology (``headend.rules.topology``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headend.rules.testing import grid_meters
from headend.rules.topology import Ids, Topology


def test_topology_ids_are_compact_and_read_as_str() -> None:
    g = grid_meters(1, 2, 5, 4)
    topo = Topology.from_meters(g)
    assert isinstance(topo.meter_id, Ids) and len(topo.meter_id) == 40
    assert topo.meter_id[5] == str(g.column("meter_id")[5].as_py())
    assert topo.names[1][1] == "S0F0T1" and list(topo.names[3]) == ["S0"]
    assert topo.meter_id.isin(["S0F0T1M1", "nope"]).tolist() == [i == 5 for i in range(40)]
    # a meter_idx never registered reads as ""
    sparse = Topology.from_meters(g.filter(pa.array(np.arange(40) != 3)))
    assert sparse.meter_id[3] == "" and sparse.meter_id[4] == "S0F0T1M0"
