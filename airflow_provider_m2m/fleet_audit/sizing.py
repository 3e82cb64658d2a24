"""
How many SIMs a mapped batch gets, from the fleet and the pool; pure, no Airflow imports.

A nightly audit is bounded by the platform's rate limit, shared by the batches running at once (the
``m2m_platform`` pool's slots, each paced at its share of the limit). Time is lost where a slot stands idle:
between two waves of batches (the scheduler notices a batch ended and starts the next task: seconds each
time) and in a last wave that fills only some of the slots (the rest of the platform's limit goes unused
until it ends). So the batches come in full waves, as few as the largest batch allows:

* the number of batches is a multiple of the pool's slots (every wave fills the pool);
* the waves are as few as ``max_batch_size`` allows: a bigger batch means fewer gaps (a worker killed
  mid-batch no longer costs the whole batch: its retry resumes from the answers the batch flushed, see
  :mod:`~airflow_provider_m2m.utils.batch_progress`, but a batch still holds its SIMs in memory);
* the batches stay within ``max_map_length`` (Airflow's ``[core] max_map_length``, 1,024 by default), which
  wins over ``max_batch_size`` for a fleet too big for both.
"""

from __future__ import annotations

import math

#: The largest batch the automatic sizing makes: 250,000 SIMs, a quarter of a million-SIM fleet, take about 17
#: minutes at 250 requests/s (a quarter of a 1,000/s platform limit). Big batches mean few task starts (each
#: leaves its slot idle for seconds): a retry after a crashed worker resumes, so it costs at most a flushed part
#: plus the calls in flight, not the batch. This bounds a batch's memory (its ICCIDs, about 20 MB) and a task's
#: length.
MAX_BATCH_SIZE = 250_000
#: Airflow's default ``[core] max_map_length``.
MAX_MAP_LENGTH = 1024


def batch_size_for(
    fleet_size: int,
    pool_slots: int,
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_map_length: int = MAX_MAP_LENGTH,
) -> int:
    """
    SIMs per batch so that the batches fill ``pool_slots`` in as few full waves as possible.

    :param fleet_size: SIMs in the fleet.
    :param pool_slots: batches that run at once (the slots of the pool the mapped tasks share).
    :param max_batch_size: the most SIMs a batch may get, unless ``max_map_length`` needs more.
    :param max_map_length: the most batches a run may map.
    :raises ValueError: a count that is not a positive number (the fleet may be empty).

    20,000 SIMs on a pool of 4 slots: one wave of 4 batches of 5,000.

    >>> batch_size_for(20_000, 4)
    5000

    1,000,000 SIMs: one wave of 4 batches of 250,000; 2,000,000 SIMs: two waves (8 batches of 250,000).

    >>> batch_size_for(1_000_000, 4), batch_size_for(2_000_000, 4)
    (250000, 250000)

    Without the resume a smaller ``max_batch_size`` would be wiser: 13 waves of 4 batches of 20,000 at most.

    >>> batch_size_for(1_000_000, 4, max_batch_size=20_000)
    19231

    A fleet smaller than the pool: one SIM per batch, as many batches as SIMs.

    >>> batch_size_for(3, 4)
    1

    ``max_map_length`` wins over ``max_batch_size``: 500,000,000 SIMs cannot be cut into 1,024 batches of
    250,000, so they get 1,024 batches (256 waves of 4) of 488,282.

    >>> batch_size_for(500_000_000, 4)
    488282
    """
    if fleet_size < 0:
        raise ValueError(f"fleet_size must be 0 or more, got {fleet_size}")
    for name, value in (("pool_slots", pool_slots), ("max_batch_size", max_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be 1 or more, got {value}")
    if max_map_length < 1:
        raise ValueError(f"max_map_length must be 1 or more, got {max_map_length}")
    if fleet_size == 0:
        return 1
    waves = math.ceil(fleet_size / (pool_slots * max_batch_size))
    most_waves = max(1, max_map_length // pool_slots)  # full waves that fit in the map
    batches = min(pool_slots * min(waves, most_waves), max_map_length)
    return math.ceil(fleet_size / batches)
