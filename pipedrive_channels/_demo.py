"""``python -m pipedrive_channels demo``: the main job, a back-fill, against the embedded fake Pipedrive.

No account and no network: the fake server runs in-process on 127.0.0.1 and enforces a Lite plan's burst limit
(80 requests per 2 s). The demo installs the app the way Pipedrive does (an authorization code exchanged for a
token), generates a sample history (2,000 messages across a few channels and conversations, with status
updates), back-fills it with a Lite-plan budget and a checkpoint, shows progress, and prints the report.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._wire import RECEIVE_MESSAGE
from .auth import OAuthApp
from .backfill import BackfillReport, Progress, backfill
from .budget import Plan, RateBudget
from .client import ChannelsClient
from .models import Attachment, Message, MessageStatus
from .testing import FakePipedrive

CHANNELS = {"whatsapp-support": "WhatsApp support", "messenger-sales": "Messenger sales", "web-chat": "Web chat"}


def sample_history(messages: int, conversations_per_channel: int = 12) -> Iterator[Message]:
    """A made-up export: ``messages`` records, every fifth one a status update of an earlier message."""
    start = datetime.now(timezone.utc) - timedelta(days=30)
    channels = list(CHANNELS)
    originals = 0
    for index in range(messages):
        if index % 5 == 4:  # the export also holds later status changes: delivered, then read
            original = index - 4
            channel = channels[original % len(channels)]
            status = MessageStatus.DELIVERED if index % 10 == 4 else MessageStatus.READ
        else:
            original = index
            channel = channels[index % len(channels)]
            status = MessageStatus.SENT
            originals += 1
        conversation = f"{channel}-conversation-{original // len(channels) % conversations_per_channel}"
        yield Message(
            id=f"{channel}-message-{original}",
            channel_id=channel,
            sender_id=f"customer-{original % 37}",
            conversation_id=conversation,
            message=f"Message {original} of the sample history",
            status=status,
            created_at=start + timedelta(minutes=original),
            attachments=(
                [Attachment(id=f"file-{original}", type="image/png", url=f"https://files.example/{original}.png")]
                if original % 25 == 0
                else []
            ),
        )


async def run_demo(
    messages: int = 2_000,
    on_progress: Callable[[Progress], None] | None = None,
    display: AbstractAsyncContextManager[object] | None = None,
) -> BackfillReport:
    """Run the demo, print a summary, and return the back-fill's report.

    :param display: entered when the back-fill starts and left when it ends, e.g. to draw a progress bar between
        the header and the report.
    """
    started = time.perf_counter()
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        print(f"pipedrive-channels demo: back-fill {messages:,} messages into the embedded fake Pipedrive "
              f"at {fake.root_url}")
        redirect = "http://127.0.0.1/callback"
        app = OAuthApp(fake.client_id, fake.client_secret, redirect_uri=redirect,
                       token_url=fake.token_url, authorize_url=fake.authorize_url)
        token = await app.exchange_code(fake.issue_code(redirect_uri=redirect))
        print(f"  OAuth: authorization code exchanged; the token expires {token.expires_at:%H:%M:%S} UTC")
        budget = RateBudget.for_plan(Plan.LITE, seats=1)
        seconds = budget.time_for(messages + len(CHANNELS), RECEIVE_MESSAGE.cost * messages)
        print(f"  budget: Lite plan, {budget.requests_per_window} requests per {budget.window:g} s, "
              f"{budget.limits.daily_tokens or 0:,.0f} tokens a day; "
              f"this job needs about {seconds:.0f} s")
        with tempfile.TemporaryDirectory() as folder:
            async with ChannelsClient(token, app=app, base_url=fake.base_url, budget=budget) as client, \
                    display or contextlib.nullcontext():
                report = await backfill(client, sample_history(messages), concurrency=16,
                                        checkpoint=Path(folder) / "demo-checkpoint.sqlite",
                                        ensure_channels=CHANNELS, on_progress=on_progress)
        stored = sum(len(thread) for thread in fake.messages.values())
        refused = sum(r.status == 429 for r in fake.requests)
    print(f"  report: {report.delivered:,} delivered, {report.skipped} skipped, {report.failed} failed; "
          f"{report.requests_sent:,} requests, {report.tokens_charged:,.0f} tokens; {report.rate:,.1f} msg/s")
    print(f"  the server holds {stored:,} messages in {len(fake.messages)} conversations of {len(fake.channels)} "
          f"channels (status updates replace their message); 429 answers: {refused}")
    print(f"  time: {time.perf_counter() - started:.1f} s")
    return report
