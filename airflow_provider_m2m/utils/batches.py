"""
Running one coroutine per item with bounded concurrency, for the hooks' batch methods; no Airflow imports.

* :func:`map_concurrently`: yield results as they complete, driving the event loop on the caller's thread
  (no worker threads: Airflow's in-process supervisor channel is not thread-safe) with bounded buffering,
  so memory stays flat.
* :func:`gather_concurrently`: the coroutine twin, for code already inside an event loop.
* :func:`refuse_inside_event_loop`: why the first cannot run inside a running loop, said before it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import aiohttp

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def refuse_inside_event_loop(async_twin: str) -> None:
    """
    Refuse a synchronous batch inside a running event loop (Jupyter, async code), before anything starts.

    The batch drives its own loop on the caller's thread (no worker threads, see :func:`map_concurrently`),
    which cannot run while another loop runs there; refusing before the first coroutine is made leaves no
    "coroutine was never awaited" behind.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"This is called inside a running event loop: use `await {async_twin}(...)` instead")


async def _pool(
    items: Iterable[T],
    work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
    client: aiohttp.ClientSession,
    emit: Callable[[R], Awaitable[None]],
    max_workers: int,
) -> None:
    """Run ``work`` over ``items`` in ``max_workers`` tasks pulling from one iterator; ``emit`` each result."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared iterator: safe, everything runs on one thread
            await emit(await work(client, item))

    async with asyncio.TaskGroup() as group:
        for _ in range(max_workers):
            group.create_task(worker())


async def gather_concurrently(
    items: Iterable[T],
    work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
    *,
    session: Callable[[], AbstractAsyncContextManager[aiohttp.ClientSession]],
    max_workers: int,
) -> list[R]:
    """
    The coroutine twin of :func:`map_concurrently` for code already inside an event loop (a trigger):
    all the results, in completion order. An exception from ``work`` is raised here.
    """
    results: list[R] = []

    async def keep(result: R) -> None:
        results.append(result)

    try:
        async with session() as client:
            await _pool(items, work, client, keep, max_workers)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return results


def map_concurrently(
    items: Iterable[T],
    work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
    *,
    session: Callable[[], AbstractAsyncContextManager[aiohttp.ClientSession]],
    max_workers: int,
) -> Iterator[R]:
    """
    Yield ``await work(session, item)`` for every item, at most ``max_workers`` at a time, as they complete.

    The event loop runs on the caller's thread while it waits for the next result, so no code runs in
    other threads. Items are pulled lazily and results are buffered at most ``2 * max_workers`` deep:
    memory does not grow with the number of items. An exception from ``work`` stops the batch and is
    raised here; closing the iterator early cancels what is in flight.
    """
    loop = asyncio.new_event_loop()
    results: asyncio.Queue = asyncio.Queue(maxsize=2 * max_workers)

    async def run_all() -> None:
        try:
            async with session() as client:
                await _pool(items, work, client, results.put, max_workers)
        finally:
            await results.put(_DONE)

    runner = loop.create_task(run_all())
    try:
        finished = False
        while not finished:
            ready = [loop.run_until_complete(results.get())]
            while not results.empty():  # take what else is ready without another turn of the loop
                ready.append(results.get_nowait())
            if ready[-1] is _DONE:
                finished = True
                ready.pop()
            yield from ready
        try:
            loop.run_until_complete(runner)
        except BaseExceptionGroup as group:  # the first error from work(), as the caller expects
            raise group.exceptions[0] from None
    finally:
        if not runner.done():
            runner.cancel()
            loop.run_until_complete(asyncio.gather(runner, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
