"""
Python's cycle collector, paused while a task walks a million rows (the fleet audit's report, its diff).

The report's diff makes millions of small objects (a list of cells per row, a dict per SIM) that are freed by
reference counting as the walk moves on. The cycle collector, triggered by allocations, kept scanning the ones
alive (a batch's answers, the audit state's rows) while finding nothing to free: about an eighth of the time
the report of a million SIMs took (figure 8's ``report_collecting_s``). Memory does not grow while it is
paused unless something makes reference cycles, and what a paused walk made is collected when it resumes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_cycle_collector() -> Iterator[None]:
    """
    Pause the cycle collector for the block (unless it was already off); resume it after, whatever happens.

    >>> with paused_cycle_collector():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
