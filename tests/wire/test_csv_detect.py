"""Kind detection from the canonical CSV header line."""

from __future__ import annotations

import pytest

from headend.errors import DecodeError
from headend.wire.csvfmt import KINDS, detect_kind

METERS = "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id"


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (METERS, "meters"),
        (METERS + ",interval_minutes", "meters"),
        ("meter_id,reading_type,interval_end,value,quality", "reads"),
        ("meter_id,register,read_time,value", "registers"),
        ("meter_id,event_time,event_code", "events"),
        ("collector_id,hmac_key", "collectors"),
        ("time,temperature_c", "weather"),
        ("time,temperature_c,zone", "weather"),
        ("transformer_id,rating_kva", "transformers"),
        ("meter_id,customer_class", "customers"),
    ],
)
def test_each_kind(header: str, kind: str) -> None:
    assert detect_kind(header) == kind
    assert detect_kind(header.encode()) == kind


def test_all_kinds_listed() -> None:
    assert KINDS == ("meters", "reads", "registers", "events", "collectors", "transformers",
                     "customers", "weather")


@pytest.mark.parametrize(
    "header",
    [
        b"\xef\xbb\xbfmeter_id,event_time,event_code\r\n",
        "\ufeffmeter_id,event_time,event_code\r\n",
        b"  meter_id , event_time ,event_code  \n",
        b"meter_id,event_time,event_code,site,note\n",  # extras after the required ones
        b'"meter_id","event_time","event_code"\r\n',  # quoted names
    ],
)
def test_tolerated_variants(header: str | bytes) -> None:
    assert detect_kind(header) == "events"


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"meter_id,event_code,event_time",  # wrong order
        b"site,meter_id,event_time,event_code",  # extra column first
        b"meter_id;event_time;event_code",  # wrong separator
        b"Meter_ID,event_time,event_code",  # names are case-sensitive
        b"meter_id,event_time",  # missing column
        b"\xff\xfemeter_id,event_time,event_code",  # not UTF-8
    ],
)
def test_unknown_header_is_bad_csv(header: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        detect_kind(header)
    assert info.value.reason == "bad_csv"
