"""The README's "Guarantees" and "Server sync" figures are the code's: a default changed in one place fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from pipedrive_channels import ChannelsClient, OAuthApp, RetryPolicy
from pipedrive_channels.backfill import MAX_CONCURRENCY
from pipedrive_channels.budget._rate_headers import MAX_BURST_RESET, MAX_SERVER_WAIT
from pipedrive_channels.extension import MAX_FORM_PARTS, create_app
from pipedrive_channels.redis_budget import RedisBudget

README = (Path(__file__).parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return " ".join(README[start:end].split())  # one line: sentences wrap anywhere


def _default(function: object, name: str) -> object:
    return inspect.signature(function).parameters[name].default


def _seconds(value: float) -> str:
    return f"{value:g} s" if value < 3600 else f"{value / 3600:g} h"


GUARANTEES = _section("Guarantees")


@pytest.mark.parametrize(
    "phrase",
    [
        f"client's `timeout` ({_seconds(_default(ChannelsClient, 'timeout'))})",
        f"`OAuthApp(timeout=)` ({_seconds(OAuthApp('id', 'secret').timeout)})",
        f"`x-ratelimit-reset` {_seconds(MAX_BURST_RESET)}",
        f"`Retry-After` and a spent daily budget {_seconds(MAX_SERVER_WAIT)}",
        f"`max_attempts` ({RetryPolicy().max_attempts})",
        f"`max_elapsed` ({_seconds(RetryPolicy().max_elapsed)})",
        f"`redis_timeout` ({_seconds(_default(RedisBudget, 'redis_timeout'))})",
        f"`body_timeout` ({_seconds(_default(create_app, 'body_timeout'))})",
        f"`max_answer_bytes` ({_default(ChannelsClient, 'max_answer_bytes') // 2**20} MiB)",
        f"`max_upload_bytes` ({_default(create_app, 'max_upload_bytes') // 2**20} MiB",
        f"{MAX_FORM_PARTS:,} parts",
        f"`concurrency` is at most {MAX_CONCURRENCY}",
        "Redirects are never followed",
    ],
)
def test_the_guarantees_state_the_codes_defaults(phrase: str) -> None:
    assert phrase in GUARANTEES


def test_server_sync_says_what_the_budget_does_with_a_remaining_count() -> None:
    # The budget acts on `x-ratelimit-remaining: 0` only (tests/test_budget.py pins the behaviour); the README once
    # said a lower positive count "takes the difference".
    budget_section = _section("Usage")
    assert "takes the difference" not in budget_section
    assert re.search(r"a remaining count above zero is not acted on", budget_section)
    assert f"a reset is taken up to {_seconds(MAX_BURST_RESET)}" in budget_section
