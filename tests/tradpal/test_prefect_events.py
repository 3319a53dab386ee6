"""tradpal.prefect_events: Prefect's real events worker, taking queued events in bursts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from prefect._internal.concurrency.services import _QueueServiceBase
from prefect.events import emit_event
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker

from tradpal.prefect_events import drain_in_bulk


class Gate:
    """Prefect's recording events client (`AssertingEventsClient`: Prefect sends only to the
    clients it knows, so it is patched, not subclassed) holds the first event until
    ``opened`` (the rest queue up meanwhile) and refuses the events named in ``refuse``."""

    opened = threading.Event()
    refuse: set[str] = set()


RECORD = AssertingEventsClient._emit


async def gated_emit(client: AssertingEventsClient, event) -> None:
    while not Gate.opened.is_set():
        await asyncio.sleep(0.005)
    if event.event in Gate.refuse:
        raise ConnectionError(f"refused {event.event}")
    await RECORD(client, event)


@pytest.fixture
def worker_hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The gated recording client for the events worker; how many hand-offs to its helper thread
    (one list entry per ``queue.get`` submitted)."""
    from prefect._internal.concurrency.threads import WorkerThread

    EventsWorker.drain_all(at_exit=False)  # none left from another test, with another client
    Gate.opened.clear()
    Gate.refuse = set()
    AssertingEventsClient.reset()
    monkeypatch.setattr(AssertingEventsClient, "_emit", gated_emit)
    EventsWorker.set_client_override(AssertingEventsClient)
    calls: list[int] = []
    submit = WorkerThread.submit

    def counted(self, call):
        if self.name == "EventsWorkerThread":
            calls.append(1)
        return submit(self, call)

    monkeypatch.setattr(WorkerThread, "submit", counted)
    yield calls
    Gate.opened.set()
    EventsWorker.drain_all(at_exit=False)
    EventsWorker.set_client_override(None)
    drain_in_bulk(1)


def emit_burst(n: int, prefix: str = "e") -> list[str]:
    names = [f"tradpal.test.{prefix}{i}" for i in range(n)]
    for name in names:
        emit_event(event=name, resource={"prefect.resource.id": "tradpal.test"})
    return names


def sent() -> list[str]:
    return [e.event for client in AssertingEventsClient.all for e in client.events]


def test_queued_events_go_in_one_hand_off_in_order(worker_hand_offs: list[int]) -> None:
    assert drain_in_bulk(256)
    names = emit_burst(101)  # the first is held by the client; 100 queue up behind it
    Gate.opened.set()
    EventsWorker.drain_all(at_exit=False)
    assert sent() == names
    # the held first event, then the 100 at once, then the stop marker: a few hand-offs, not 102
    assert len(worker_hand_offs) <= 4, len(worker_hand_offs)


def test_prefect_loop_is_back_with_a_burst_of_one(worker_hand_offs: list[int]) -> None:
    drain_in_bulk(256)
    assert not drain_in_bulk(1)
    assert EventsWorker._main_loop is _QueueServiceBase._main_loop
    names = emit_burst(30)
    Gate.opened.set()
    EventsWorker.drain_all(at_exit=False)
    assert sent() == names
    assert len(worker_hand_offs) >= 30  # one per event, as Prefect does it


def test_an_event_that_fails_does_not_take_the_rest_of_its_burst(worker_hand_offs: list[int]) -> None:
    drain_in_bulk(64)
    Gate.refuse = {"tradpal.test.e5", "tradpal.test.e6"}
    names = emit_burst(40)
    Gate.opened.set()
    EventsWorker.drain_all(at_exit=False)
    assert sent() == [n for n in names if n not in Gate.refuse]


def test_a_worker_running_before_is_stopped_after_sending_its_queue(worker_hand_offs: list[int]) -> None:
    drain_in_bulk(1)
    early = emit_burst(5)  # a worker on Prefect's loop, with its queue held
    old = EventsWorker.instance()
    assert drain_in_bulk(256)
    assert old._stopped
    Gate.opened.set()
    later = emit_burst(5, prefix="late")
    assert EventsWorker.instance() is not old
    EventsWorker.drain_all(at_exit=False)
    assert sorted(sent()) == sorted(early + later)  # nothing lost across the restart
