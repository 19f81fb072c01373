"""The extension's values (``extension.models``, ``extension.provider``): what they refuse."""

from __future__ import annotations

import pytest

from pipedrive_channels import ValidationError
from pipedrive_channels.extension import Conversation, ErrorCode, Participant, ProviderError


def test_a_provider_error_checks_its_code_and_status() -> None:
    assert ProviderError("FORBIDDEN", "no").status == 403
    assert ProviderError(ErrorCode.NOT_FOUND, "gone", 410).status == 410
    with pytest.raises(ValidationError, match="code"):
        ProviderError("TEAPOT", "no")
    with pytest.raises(ValidationError, match="status"):
        ProviderError("FORBIDDEN", "no", 500)


def test_conversations_need_one_source_user_and_an_end_user() -> None:
    agent = Participant("agent", "Agent", "source_user")
    alice = Participant("alice", "Alice", "end_user")
    with pytest.raises(ValidationError, match="participants: must hold exactly one source_user, got 2"):
        Conversation("c", "", "open", True, [agent, agent, alice])
    with pytest.raises(ValidationError, match="at least one end_user"):
        Conversation("c", "", "open", True, [agent])
    with pytest.raises(ValidationError, match="link"):
        Conversation("c", "chat.example.com", "open", True, [agent, alice])
    with pytest.raises(ValidationError, match="role"):
        Participant("x", "X", "admin")
    with pytest.raises(ValidationError, match="status"):
        Conversation("c", "", "archived", True, [agent, alice])
    assert Conversation("c", "", "open", True, [agent, alice]).link == ""
