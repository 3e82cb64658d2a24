"""The automatic batch size (``fleet_audit.sizing``): full waves, as few as the largest batch allows."""

from __future__ import annotations

import math

import pytest

from airflow_provider_m2m.fleet_audit.sizing import MAX_BATCH_SIZE, batch_size_for


def _batches(fleet: int, size: int) -> list[int]:
    """The batch sizes ``chunked`` cuts a fleet into."""
    return [min(size, fleet - start) for start in range(0, fleet, size)]


@pytest.mark.parametrize("fleet", [1, 7, 999, 20_000, 20_001, 79_999, 80_001, 333_333, 1_000_000, 1_000_001, 5_000_003])
@pytest.mark.parametrize("slots", [1, 3, 4, 16])
def test_every_wave_fills_the_pool_in_as_few_waves_as_the_largest_batch_allows(fleet, slots):
    size = batch_size_for(fleet, slots)
    batches = _batches(fleet, size)
    assert sum(batches) == fleet and len(batches) <= 1024
    assert size <= MAX_BATCH_SIZE
    fewest_waves = math.ceil(fleet / (slots * MAX_BATCH_SIZE))
    if fleet >= slots * fewest_waves:
        # slots x waves batches, the last one at most one SIM per batch shorter: no slot idles in the last wave
        assert len(batches) == slots * fewest_waves
        assert max(batches) - min(batches) <= len(batches)
    else:  # fewer SIMs than slots: one SIM each
        assert batches == [1] * fleet


def test_a_fleet_smaller_than_the_pool_gets_one_sim_per_batch():
    assert batch_size_for(3, 4) == 1
    assert batch_size_for(4, 4) == 1
    assert batch_size_for(5, 4) == 2  # 2, 2, 1: three batches, the fourth slot would get nothing
    assert batch_size_for(0, 4) == 1  # an empty fleet maps no batch at all


def test_max_map_length_wins_over_the_largest_batch():
    size = batch_size_for(500_000_000, 4)
    assert size > MAX_BATCH_SIZE and len(_batches(500_000_000, size)) == 1024
    # a smaller map: the most full waves that fit (25 of 4 = 100 batches, not 101)
    assert len(_batches(100_000_000, batch_size_for(100_000_000, 4, max_map_length=101))) == 100
    # more slots than the map allows: as many batches as the map takes
    assert len(_batches(1_000_000, batch_size_for(1_000_000, 2000, max_map_length=1024))) == 1024


def test_a_smaller_largest_batch_means_more_full_waves():
    size = batch_size_for(100_000, 4, max_batch_size=5_000)
    assert size == 5_000 and len(_batches(100_000, size)) == 20  # 5 waves of 4


@pytest.mark.parametrize(
    ("args", "field"),
    [((-1, 4), "fleet_size"), ((10, 0), "pool_slots")],
)
def test_bad_counts_are_refused_naming_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        batch_size_for(*args)
    with pytest.raises(ValueError, match="max_batch_size"):
        batch_size_for(10, 4, max_batch_size=0)
    with pytest.raises(ValueError, match="max_map_length"):
        batch_size_for(10, 4, max_map_length=0)


def test_the_fleet_plan_sizes_from_the_fleet_file_unless_a_batch_size_is_given(tmp_path):
    from airflow_provider_m2m.fleet_audit.plan import plan_fleet
    from airflow_provider_m2m.sandbox import Fleet

    fleet = Fleet(1_001).write_csv(tmp_path / "fleet.csv").as_uri()

    def sims(batch_size, pool_slots, max_map_length=1024):
        plan = plan_fleet(fleet, tmp_path.as_uri(), "2026-03-01", batch_size, pool_slots=pool_slots,
                          max_map_length=max_map_length)  # fmt: skip
        return [batch["sims"] for batch in plan]

    assert sims(None, 4) == [251, 251, 251, 248]  # 1,001 rows, counted in the plan's one read: one wave of 4
    assert sims(None, 3, max_map_length=2) == [501, 500]  # the map allows 2 batches only
    assert sims(70, 4) == [70] * 14 + [21]  # an explicit batch size wins
