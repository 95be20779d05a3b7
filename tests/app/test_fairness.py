"""FairBudget: units, turns by owner, per-owner caps, oversize requests, cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app_patch.service.fairness import FairBudget


async def _order_of_grants(budget: FairBudget, requests: list[tuple[str, int]]) -> list[str]:
    """Start every request (in list order) at once; each holds its grant for one loop
    iteration. Returns the labels in the order they were granted."""
    granted: list[str] = []

    async def one(label: str, owner: str, units: int) -> None:
        async with budget.hold(owner, units):
            granted.append(label)
            await asyncio.sleep(0.001)

    await asyncio.gather(
        *(one(f"{owner}{i}", owner, units) for i, (owner, units) in enumerate(requests))
    )
    return granted


def test_owners_take_turns_instead_of_first_come_first_served():
    budget = FairBudget(max_grants=1)
    order = asyncio.run(_order_of_grants(budget, [("a", 1)] * 5 + [("b", 1), ("c", 1)]))
    # a0 was alone; then b and c each get the next turn, not the end of a's queue.
    assert order[:4] == ["a0", "b5", "c6", "a1"]
    assert order[4:] == ["a2", "a3", "a4"]


def test_units_are_capped_and_a_request_larger_than_the_whole_budget_runs_alone():
    budget = FairBudget(100)
    peak = {"in_use": 0, "big_with_others": False}

    async def one(owner: str, units: int) -> None:
        async with budget.hold(owner, units):
            peak["in_use"] = max(peak["in_use"], budget.in_use)
            if units > 100 and budget.grants > 1:
                peak["big_with_others"] = True
            await asyncio.sleep(0.005)

    async def main() -> None:
        await asyncio.gather(one("a", 60), one("b", 150), one("c", 30), one("a", 40))

    asyncio.run(main())
    assert peak == {"in_use": 150, "big_with_others": False}
    assert budget.in_use == 0 and budget.grants == 0


def test_strict_turns_do_not_starve_a_large_request():
    """b's large request is next in turn: c's small one, which would fit, waits behind it."""
    budget = FairBudget(10)

    async def main() -> list[str]:
        order: list[str] = []
        first = await budget.acquire("a", 6)

        async def one(owner: str, units: int) -> None:
            async with budget.hold(owner, units):
                order.append(owner)

        waiting = [asyncio.create_task(one("b", 8)), asyncio.create_task(one("c", 2))]
        await asyncio.sleep(0.01)
        assert order == [] and budget.waiting() == 2
        first.release()
        await asyncio.gather(*waiting)
        return order

    assert asyncio.run(main()) == ["b", "c"]


def test_per_owner_cap_leaves_room_for_others():
    budget = FairBudget(max_grants=3, per_owner=2)

    async def main() -> tuple[int, int]:
        held = [await budget.acquire("a"), await budget.acquire("a")]
        third = asyncio.create_task(budget.acquire("a"))
        await asyncio.sleep(0.01)
        assert not third.done()  # a is at its cap although a grant is free
        other = await asyncio.wait_for(budget.acquire("b"), 30)  # b is not held up by a
        held[0].release()
        (await asyncio.wait_for(third, 30)).release()
        for grant in (held[1], other):
            grant.release()
        return budget.in_use, budget.grants

    assert asyncio.run(main()) == (0, 0)


def test_cancelled_waiters_leave_no_trace_and_release_is_idempotent():
    budget = FairBudget(max_grants=1)

    async def main() -> None:
        first = await budget.acquire("a")
        waiter = asyncio.create_task(budget.acquire("b"))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert budget.waiting() == 0
        first.release()
        first.release()  # twice: still one release
        assert (budget.in_use, budget.grants) == (0, 0)
        again = await asyncio.wait_for(budget.acquire("c"), 30)
        assert budget.grants == 1
        again.release()

    asyncio.run(main())


def test_threads_and_event_loops_share_one_budget():
    budget = FairBudget(max_grants=1)
    held = budget.acquire_blocking("tool")
    got = threading.Event()

    async def from_a_loop() -> None:
        async with budget.hold("user"):
            got.set()

    thread = threading.Thread(target=asyncio.run, args=(from_a_loop(),))
    thread.start()
    assert not got.wait(0.1)  # the thread's grant holds the only unit
    held.release()
    thread.join(5)
    assert got.is_set() and budget.grants == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_limits_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        FairBudget(bad)


def test_a_grant_for_a_waiter_whose_loop_closed_goes_to_the_next():
    """A waiter left behind by a closed event loop must not keep the units forever."""
    budget = FairBudget(max_grants=1)
    first = budget.acquire_blocking("a")
    loop = asyncio.new_event_loop()
    orphan = loop.create_task(budget.acquire("b"))
    loop.run_until_complete(asyncio.sleep(0.01))  # b is queued
    loop.set_exception_handler(lambda *_: None)  # "Task was destroyed": that is the point
    loop.close()  # without cancelling b: its task is simply gone
    first.release()  # b's turn: its loop cannot take it
    assert (budget.grants, budget.waiting()) == (0, 0)
    budget.acquire_blocking("c").release()
    assert orphan.done() is False
