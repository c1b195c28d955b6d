import numpy as np

from headend.vee.grid import build_grids, grid_to_table, local_calendar

from ._data import T0, ivl, reads

PARIS_SPRING = 1_711_753_200  # 2024-03-29T23:00:00Z = 2024-03-30T00:00 Paris (CET)
PARIS_AUTUMN = 1_729_980_000  # 2024-10-26T22:00:00Z = 2024-10-27T00:00 Paris (CEST)


def test_build_grids_splits_by_reading_type_and_interval_and_marks_expected_span():
    t = reads([0, 0, 0, 1, 1], [T0 + 900, T0 + 2700, T0 + 3600, T0 + 3600, T0 + 3 * 3600],
              [1, 2, 3, 4, 5])
    grids = build_grids(t, ivl(900, 3600))
    assert [(g.reading_type, g.interval_s) for g in grids] == [(0, 900), (0, 3600)]
    g15, g60 = grids
    assert g15.t0 == T0 + 900
    np.testing.assert_array_equal(g15.value, [[1, np.nan, 2, 3]])
    np.testing.assert_array_equal(g15.expected, [[True] * 4])
    np.testing.assert_array_equal(g60.value, [[4, np.nan, 5]])
    np.testing.assert_array_equal(g60.interval_end, [T0 + 3600, T0 + 7200, T0 + 10800])


def test_grid_to_table_round_trips_present_cells():
    t = reads(0, [T0 + 900, T0 + 1800], [7, 8], [1, 0])
    (g,) = build_grids(t, ivl(900))
    assert grid_to_table(g, g.value, g.quality, g.present).equals(t)


def test_local_calendar_spring_dst_day_has_92_quarter_hours():
    # 2024-03-31 in Paris has 23 hours; the grid starts at local midnight of the 30th
    cal = local_calendar(PARIS_SPRING + 900, 96 * 3, 900, "Europe/Paris")
    assert [str(d) for d in cal.date] == ["2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02"]
    np.testing.assert_array_equal(cal.n_intervals, [96, 92, 96, 96])
    np.testing.assert_array_equal(np.bincount(cal.day), [96, 92, 96, 4])
    np.testing.assert_array_equal(cal.weekday, [5, 6, 0, 1])
    day1 = cal.slot[cal.day == 1]
    # 02:00-03:00 local does not exist: slot 8 (02:00) is skipped
    assert day1[7] == 7 and day1[8] == 12


def test_local_calendar_autumn_dst_day_has_100_quarter_hours_and_repeats_slots():
    cal = local_calendar(PARIS_AUTUMN + 900, 100, 900, "Europe/Paris")
    np.testing.assert_array_equal(cal.n_intervals, [100])
    np.testing.assert_array_equal(np.bincount(cal.slot)[8:12], [2, 2, 2, 2])  # 02:00-03:00 twice


def test_local_calendar_utc_default_is_24_hours():
    cal = local_calendar(T0 + 3600, 48, 3600)
    np.testing.assert_array_equal(cal.n_intervals, [24, 24])
    np.testing.assert_array_equal(cal.slot[:3], [0, 1, 2])
    assert str(cal.date[0]) == "2024-01-01" and cal.weekday[0] == 0
