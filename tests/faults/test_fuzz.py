"""Fuzzing of frames and CSV: no crash, and every rejection has a reason.

At least 100,000 inputs per run (hypothesis draws the seeds of batches of mutated
uploads, see :mod:`tests.faults.fuzzing`); ``bench/bench_fuzz.py`` runs 1M. A smaller
share goes through the whole ingest (registry, validation, store, quarantine), where
every row must be accounted for: stored, duplicate, or quarantined with a reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.errors import DecodeError
from headend.ingest.pipeline import Ingestor
from headend.model.reasons import REASONS
from tests.faults import fuzzing

BATCH = 50
FRAME_EXAMPLES = 1_500  # x 50 = 75,000 frame uploads
CSV_EXAMPLES = 500  # x 50 = 25,000 CSV uploads
TALLY: dict[str, int] = {"frame": 0, "csv": 0}

def _fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@_fast(FRAME_EXAMPLES)
@given(seed=st.integers(0, 2**63 - 1))
def test_fuzzed_frames_decode_or_are_rejected_with_a_reason(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(BATCH):
        fuzzing.check_frame_input(fuzzing.mutate_frame(rng))
    TALLY["frame"] += BATCH


@_fast(CSV_EXAMPLES)
@given(seed=st.integers(0, 2**63 - 1))
def test_fuzzed_csv_decodes_or_is_rejected_with_a_reason(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(BATCH):
        fuzzing.check_csv_input(fuzzing.mutate_csv(rng))
    TALLY["csv"] += BATCH


@_fast(1_000)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_as_frames(data: bytes) -> None:
    fuzzing.check_frame_input(b"HEFR" + data)
    TALLY["frame"] += 1


@_fast(500)
@given(text=st.text(max_size=300))
def test_arbitrary_text_as_csv(text: str) -> None:
    fuzzing.check_csv_input(b"meter_id,reading_type,interval_end,value,quality\n"
                            + text.encode("utf-8", "surrogatepass"))
    TALLY["csv"] += 1


def test_the_suite_fuzzed_at_least_100000_inputs() -> None:
    # runs after the tests above (file order); fails if they were cut down or skipped
    if TALLY["frame"] == 0 or TALLY["csv"] == 0:
        pytest.skip("run with the whole file: the fuzz tests above did not run")
    assert TALLY["frame"] + TALLY["csv"] >= 100_000, TALLY


@pytest.fixture(scope="module")
def ingestor(tmp_path_factory: pytest.TempPathFactory) -> Ingestor:
    root = tmp_path_factory.mktemp("fuzz") / "data"
    ing = Ingestor.open(root)
    ing.ingest_bytes(fuzzing.COLLECTORS_CSV.encode(), source="collectors.csv")
    ing.ingest_bytes(fuzzing.METERS_CSV.encode(), source="meters.csv")
    return ing


def _stored(ing: Ingestor) -> int:
    st_ = ing.data.store
    return st_.scan_reads().num_rows + st_.scan_registers().num_rows + st_.scan_events().num_rows


@pytest.mark.parametrize("fmt", ["frame", "csv"])
def test_fuzzed_uploads_through_ingest_account_for_every_row(ingestor: Ingestor, fmt: str,
                                                             tmp_path: Path) -> None:
    rng = np.random.default_rng(7 if fmt == "frame" else 8)
    mutate = fuzzing.mutate_frame if fmt == "frame" else fuzzing.mutate_csv
    stored_before = _stored(ingestor)
    accepted = 0
    rejected = 0
    for i in range(300):
        body = mutate(rng)
        try:
            res = ingestor.ingest_bytes(body, source=f"fuzz-{fmt}-{i}")
        except DecodeError as exc:  # a whole upload refused: the caller quarantines it
            assert exc.reason in REASONS, exc
            rejected += 1
            continue
        assert set(res.by_reason) <= REASONS.keys(), res.by_reason
        assert res.quarantined == sum(res.by_reason.values())
        accepted += res.accepted
        rejected += res.quarantined
    # nothing invented, nothing lost: what ingest reported as new rows is what is stored
    assert _stored(ingestor) - stored_before == accepted
    assert accepted > 0
    assert rejected > 0  # the mutations did reach the rejection paths
