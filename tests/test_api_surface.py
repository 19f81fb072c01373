"""The public surface users import: names, docstrings and the typing marker."""

from __future__ import annotations

import importlib
import inspect
import sys
from datetime import datetime
from pathlib import Path

import pytest

import pipedrive_channels
from pipedrive_channels import OAuthToken, ValidationError

MODULES = ["pipedrive_channels", "pipedrive_channels.auth", "pipedrive_channels.backfill", "pipedrive_channels.budget",
           "pipedrive_channels.client", "pipedrive_channels.costs", "pipedrive_channels.errors",
           "pipedrive_channels.models", "pipedrive_channels.testing"]


def test_the_documented_names_import_from_the_package() -> None:
    for name in ["ChannelsClient", "OAuthApp", "OAuthToken", "ApiToken", "Channel", "Message", "Attachment",
                 "ProviderType", "MessageStatus", "PipedriveError", "ApiError", "ValidationError", "GoneError",
                 "NotFoundError", "TransportError"]:
        assert hasattr(pipedrive_channels, name), name


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_and_method_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__
    for name in module.__all__:
        value = getattr(module, name)
        if name.startswith("__") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        assert inspect.getdoc(value), f"{module_name}.{name}"
        if inspect.isclass(value):
            for attribute, member in vars(value).items():
                if not attribute.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    assert inspect.getdoc(member), f"{module_name}.{name}.{attribute}"


def test_the_old_session_module_still_imports_and_says_it_is_deprecated() -> None:
    from pipedrive_channels import _transport

    sys.modules.pop("pipedrive_channels.session", None)  # the warning is given on import, once per process
    with pytest.warns(DeprecationWarning, match="pipedrive_channels.session is deprecated"):
        session = importlib.import_module("pipedrive_channels.session")
    assert session.Session is _transport.Transport
    assert session.Response is _transport.Response
    assert (session.DEFAULT_BASE_URL, session.DEFAULT_MAX_ANSWER_BYTES) == (
        _transport.DEFAULT_BASE_URL, _transport.DEFAULT_MAX_ANSWER_BYTES
    )


def test_the_package_ships_its_typing_marker() -> None:
    assert (Path(pipedrive_channels.__file__).parent / "py.typed").is_file()


def test_a_naive_token_expiry_is_refused() -> None:
    with pytest.raises(ValidationError, match="expires_at"):
        OAuthToken("access", expires_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="access_token"):
        OAuthToken("")
