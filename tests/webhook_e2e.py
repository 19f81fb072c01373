"""What the end-to-end webhook tests share: an app served on a real 127.0.0.1 port for FakePipedrive to deliver
to, a client of the fake, and a wait until the fake and the app are both quiet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from factories import TOKEN

from pipedrive_channels import ChannelsClient, RateBudget, RetryPolicy
from pipedrive_channels.testing import FakePipedrive
from pipedrive_channels.webhooks import RECEIVER, WebhookReceiver

USER = "pipedrive-hooks"
PASSWORD = "hook-password-e2e-5b1c"
"""The webhook's Basic credentials (the tests look for the password in logs)."""
PATH = "/pipedrive/webhooks"
GUARD = 30.0  # seconds: a hang guard, never a timing assertion


@asynccontextmanager
async def started_fake() -> AsyncIterator[FakePipedrive]:
    """A FakePipedrive taking ``factories.TOKEN``, retrying deliveries after 3, 30 and 150 ms (not s)."""
    async with FakePipedrive(webhook_delay_scale=0.001) as fake:
        fake.webhook_timeout = 10.0  # the real one: an answer is never late on a loaded machine
        fake.add_access_token(TOKEN)
        yield fake


@asynccontextmanager
async def client_of(fake: FakePipedrive) -> AsyncIterator[ChannelsClient]:
    """A client of the fake with a roomy budget and quick retries."""
    budget = RateBudget(requests_per_window=1_000, search_requests_per_window=None)
    async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=budget,
                              retry=RetryPolicy(backoff_base=0.01)) as client:
        yield client


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` listening on 127.0.0.1 (port 0); yields the URL of its webhook route; cleaned up at the end."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{PATH}"
    finally:
        await runner.cleanup()


async def quiet(fake: FakePipedrive, receiver: WebhookReceiver) -> None:
    """Wait until the fake delivers nothing more and the app handles nothing more: a handler's writes make new
    deliveries, so both are waited for until a round changes nothing."""
    while True:
        await fake.webhooks_idle(GUARD)
        await receiver.drained()
        before = len(fake.webhook_deliveries)
        await fake.webhooks_idle(GUARD)
        if len(fake.webhook_deliveries) == before:
            return


def receiver_of(app: web.Application) -> WebhookReceiver:
    return app[RECEIVER]
