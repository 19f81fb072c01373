"""``python -m pipedrive_channels demo``: the whole lifecycle against the embedded fake Pipedrive.

No account and no network: the fake server runs in-process on 127.0.0.1. The demo installs the app the way
Pipedrive does (authorization code exchanged for a token), adds a channel, receives a few hundred messages
concurrently, deletes a conversation and the channel, and prints what it sent and what that cost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from .auth import OAuthApp
from .budget import Plan, RateBudget
from .client import ChannelsClient
from .models import Attachment, Message, MessageStatus
from .testing import FakePipedrive


def _operation(method: str, path: str) -> str:
    """Name the Channels operation of a recorded request."""
    rest = path.split("/channels", 1)[1]
    if method == "POST":
        return "receive message" if rest == "/messages/receive" else "add channel"
    return "delete conversation" if "/conversations/" in rest else "delete channel"


def _busiest_window(arrivals: list[float], window: float = 2.0) -> int:
    """The most requests the server saw in any interval of ``window`` seconds."""
    arrivals = sorted(arrivals)
    most = start = 0
    for end, at in enumerate(arrivals):
        while at - arrivals[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def _messages(channel_id: str, count: int, conversations: int) -> list[Message]:
    start = datetime.now(timezone.utc) - timedelta(days=1)
    statuses = list(MessageStatus)
    return [
        Message(
            id=f"msg-{index}",
            channel_id=channel_id,
            sender_id=f"customer-{index % conversations}",
            conversation_id=f"conversation-{index % conversations}",
            message=f"Hello from message {index}",
            status=statuses[index % len(statuses)],
            created_at=start + timedelta(minutes=index),
            attachments=(
                [Attachment(id=f"file-{index}", type="image/png", url=f"https://files.example/{index}.png")]
                if index % 10 == 0
                else []
            ),
        )
        for index in range(count)
    ]


async def run_demo(messages: int = 300, conversations: int = 20, concurrency: int = 32) -> None:
    """Run the demo and print a summary."""
    started = time.perf_counter()
    # The fake enforces a Growth plan's burst limit (160 requests per 2 s) and answers 429 beyond it.
    async with FakePipedrive(rate_limit=160, enforce_rate_limit=True) as fake:
        print(f"pipedrive-channels demo against the embedded fake Pipedrive at {fake.root_url}")
        redirect = "http://127.0.0.1/callback"
        app = OAuthApp(fake.client_id, fake.client_secret, redirect_uri=redirect,
                       token_url=fake.token_url, authorize_url=fake.authorize_url)
        token = await app.exchange_code(fake.issue_code(redirect_uri=redirect))
        print(f"  OAuth: authorization code exchanged; token expires {token.expires_at:%H:%M:%S} UTC, "
              f"api_domain {token.api_domain}")

        # The same plan's limits on our side: the budget paces the messages so that none gets a 429.
        budget = RateBudget.for_plan(Plan.GROWTH, seats=1)
        async with ChannelsClient(token, app=app, budget=budget) as client:
            channel = await client.add_channel(name="Demo support line", provider_channel_id="demo-channel")
            print(f"  channel added: Pipedrive id {channel.id}, provider_channel_id {channel.provider_channel_id}")

            batch = _messages(channel.provider_channel_id, messages, conversations)
            gate = asyncio.Semaphore(concurrency)

            async def deliver(message: Message) -> Message:
                async with gate:
                    return await client.receive_message(message)

            sent_at = time.perf_counter()
            echoed = await asyncio.gather(*(deliver(message) for message in batch))
            elapsed = time.perf_counter() - sent_at
            stored = sum(len(thread) for thread in fake.messages.values())
            assert [message.id for message in echoed] == [message.id for message in batch]
            print(f"  {len(echoed)} messages received in {conversations} conversations at concurrency "
                  f"{concurrency}: {elapsed:.2f} s ({len(echoed) / elapsed:,.0f} msg/s); the server holds {stored}")

            await client.delete_conversation(channel.provider_channel_id, "conversation-0")
            await client.delete_channel(channel.provider_channel_id)
            print(f"  conversation-0 deleted, then the channel; the server holds {len(fake.channels)} channels")

        calls = Counter(_operation(r.method, r.path) for r in fake.requests if "/channels" in r.path)
        busiest = _busiest_window([r.at for r in fake.requests if "/channels" in r.path])
    stats = budget.stats()
    detail = ", ".join(f"{name} {count}" for name, count in calls.items())
    print(f"  calls: {sum(calls.values())} ({detail}); token endpoint: {fake.token_requests}; "
          f"429 answers: {sum(r.status == 429 for r in fake.requests)}")
    print(f"  budget: {stats.tokens_charged:,.0f} tokens charged for {stats.requests_admitted} requests "
          f"(x-token-cost 10/10/6/6); longest wait {stats.max_wait:.2f} s; the server saw at most {busiest} "
          f"requests in any 2 s (limit {budget.requests_per_window})")
    print(f"  time: {time.perf_counter() - started:.2f} s")
