"""`Offers.wake_all`: what a replica does when its listener listens again (offers sent
while it was away are unknown): every held sync, of every factory, is woken once."""

from __future__ import annotations

import asyncio
import threading

from fabbrica.backends.agent_link import Offers

LONG = 600.0  # seconds: no wait here ends by its timeout


def test_every_waiter_of_every_factory_is_woken_once_and_none_is_released() -> None:
    offers = Offers()
    woken: dict[str, bool] = {}

    async def held() -> None:
        since_a, since_b = offers.generation("a"), offers.generation("b")
        waits = [
            asyncio.ensure_future(offers.wait_async("a", since_a, LONG)),
            asyncio.ensure_future(offers.wait_async("b", since_b, LONG)),
        ]
        while offers.held("a") + offers.held("b") < 2:
            await asyncio.sleep(0.01)
        threading.Thread(target=offers.wake_all).start()  # the listener's thread
        woken["a"], woken["b"] = await asyncio.gather(*waits)

    since_c = offers.generation("c")
    thread = threading.Thread(target=lambda: woken.update(c=offers.wait("c", since_c, LONG)))
    thread.start()
    asyncio.run(held())
    thread.join(LONG)
    assert woken == {"a": True, "b": True, "c": True}
    assert offers.held("a") == offers.held("b") == 0
    assert offers.releases == 0  # woken to check again, not told to answer


def test_a_sync_between_its_check_and_its_wait_sees_the_wake_too() -> None:
    offers = Offers()
    since = offers.generation("a")  # before its check of the database
    offers.wake_all()  # the listener reconnected meanwhile
    assert asyncio.run(offers.wait_async("a", since, LONG)) is True  # it checks again
    since = offers.generation("a")
    assert asyncio.run(offers.wait_async("a", since, 0.01)) is False  # and then waits
