"""``python -m pipedrive_channels demo``: the main job, a back-fill, against the embedded fake Pipedrive.

No account and no network: the fake server runs in-process on 127.0.0.1 and enforces a Lite plan's burst limit
(80 requests per 2 s) and the search window (10 per 2 s). The demo installs the app the way Pipedrive does (an
authorization code exchanged for a token), generates a sample history (2,000 messages across a few channels and
conversations, with status updates, each conversation's customer named by a phone or an email), and back-fills it
twice with a Lite-plan budget and a checkpoint: through the Channels API (with progress), then as notes on the
matched persons. It prints each one's report and the tokens each spent, measured at the server: the notes pass is
what works on live accounts (Pipedrive removed the Channels API on 2026-02-01), and it spends far fewer.
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
from .backfill import BackfillReport, Progress, WithContact, backfill
from .budget import Plan, RateBudget
from .cli._targets import counts_text
from .client import ChannelsClient
from .models import Attachment, Message, MessageStatus
from .notes import Contact, NotesTarget
from .testing import FakePipedrive

CHANNELS = {"whatsapp-support": "WhatsApp support", "messenger-sales": "Messenger sales", "web-chat": "Web chat"}


def contact_of(conversation_id: str) -> Contact:
    """The customer of a sample conversation: every other one found by phone, the rest by email."""
    channel, _, index = conversation_id.rpartition("-conversation-")
    number = 100 * list(CHANNELS).index(channel) + int(index)
    if number % 2 == 0:
        return Contact(name=f"Customer {number}", phone=f"+1555{number:07d}")
    return Contact(email=f"customer-{number}@example.com")


def with_contacts(messages: Iterator[Message]) -> Iterator[Message | WithContact]:
    """``messages`` with each conversation's contact on its first record (one is enough: targets keep it)."""
    seen: set[str] = set()
    for message in messages:
        if message.conversation_id in seen:
            yield message
        else:
            seen.add(message.conversation_id)
            yield WithContact(message, contact_of(message.conversation_id))


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
) -> dict[str, BackfillReport]:
    """Run the demo, print a summary, and return each back-fill's report by target (``channels``, ``notes``).

    :param display: entered when the Channels back-fill starts and left when it ends, e.g. to draw a progress bar
        between the header and the reports (the notes pass takes a few seconds).
    """
    started = time.perf_counter()
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        print(f"pipedrive-channels demo: back-fill {messages:,} messages into the embedded fake Pipedrive "
              f"at {fake.root_url}, through the Channels API, then as notes")
        redirect = "http://127.0.0.1/callback"
        app = OAuthApp(fake.client_id, fake.client_secret, redirect_uri=redirect,
                       token_url=fake.token_url, authorize_url=fake.authorize_url)
        token = await app.exchange_code(fake.issue_code(redirect_uri=redirect))
        print(f"  OAuth: authorization code exchanged; the token expires {token.expires_at:%H:%M:%S} UTC")
        budget = RateBudget.for_plan(Plan.LITE, seats=1)
        seconds = budget.time_for(messages + len(CHANNELS), RECEIVE_MESSAGE.cost * messages)
        print(f"  budget: Lite plan, {budget.requests_per_window} requests per {budget.window:g} s, "
              f"{budget.limits.daily_tokens or 0:,.0f} tokens a day; "
              f"the Channels pass needs about {seconds:.0f} s")
        reports, spent = {}, {}
        with tempfile.TemporaryDirectory() as folder:
            async with ChannelsClient(token, app=app, base_url=fake.base_url, budget=budget) as client:
                async with display or contextlib.nullcontext():
                    fake.tokens_spent = 0
                    reports["channels"] = await backfill(
                        client, with_contacts(sample_history(messages)), concurrency=16,
                        checkpoint=Path(folder) / "channels.sqlite", ensure_channels=CHANNELS,
                        on_progress=on_progress)
                    spent["channels"] = fake.tokens_spent
                fake.tokens_spent = 0
                reports["notes"] = await backfill(
                    client, with_contacts(sample_history(messages)), concurrency=16,
                    checkpoint=Path(folder) / "notes.sqlite", target=NotesTarget())
                spent["notes"] = fake.tokens_spent
        stored = sum(len(thread) for thread in fake.messages.values())
        refused = sum(r.status == 429 for r in fake.requests)
        notes, persons = len(fake.notes), len(fake.persons)
    for name, report in reports.items():
        counts = counts_text(report.counts)
        print(f"  {name} report: {report.delivered:,} delivered, {report.skipped} skipped, {report.failed} failed; "
              f"{report.requests_sent:,} requests{f'; {counts}' if counts else ''}; {spent[name]:,} tokens spent at "
              f"the server; {report.elapsed:.1f} s")
    print(f"  the server holds {stored:,} messages in {len(fake.messages)} conversations of {len(fake.channels)} "
          f"channels (status updates replace their message), and {notes:,} notes on {persons:,} persons; "
          f"429 answers: {refused}")
    share = spent["notes"] / spent["channels"] if spent["channels"] else 0.0
    print(f"  tokens: the notes pass spent {spent['notes']:,}, {share:.0%} of the Channels pass's "
          f"{spent['channels']:,}. Only notes work on live accounts: Pipedrive removed the Channels API on "
          f"2026-02-01 (back-fill --target notes)")
    print(f"  time: {time.perf_counter() - started:.1f} s")
    return reports
