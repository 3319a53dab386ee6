from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
def prefect_client(prefect_api):
    """Run a coroutine taking a Prefect client: ``prefect_client(lambda c: c.read_...)``."""
    from prefect.client.orchestration import get_client

    def call(fn):
        async def go():
            async with get_client() as client:
                return await fn(client)
        return asyncio.run(go())

    return call
