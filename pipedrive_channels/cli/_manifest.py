"""``pipedrive-channels manifest``: the Messaging app extension manifest of a ``ChannelProvider``, as JSON."""

from __future__ import annotations

import argparse
import importlib
import json

from ..errors import ValidationError
from ._common import EXIT_OK, UsageError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``manifest`` command."""
    manifest = commands.add_parser(
        "manifest",
        help="print the Messaging app extension manifest of a ChannelProvider as JSON",
        description="Print the manifest (for Developer Hub) listing exactly the endpoints the provider class "
        "implements, as served by pipedrive_channels.extension.create_app at --base-url + --prefix.",
    )
    manifest.add_argument("--base-url", required=True, metavar="URL", help="where the app is reachable, https://...")
    manifest.add_argument("--provider", required=True, metavar="MODULE:CLASS", help="the ChannelProvider subclass")
    manifest.add_argument("--prefix", default="/pipedrive", metavar="PATH", help="the routes' prefix (/pipedrive)")
    manifest.set_defaults(handler=_manifest)


def _manifest(args: argparse.Namespace) -> int:
    from ..extension import ChannelProvider, manifest  # the aiohttp web app: loaded only for this command

    module_name, colon, class_name = args.provider.partition(":")
    if not colon or not module_name or not class_name:
        raise UsageError(f"--provider must be MODULE:CLASS, got {args.provider!r}")
    try:
        provider = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot load {args.provider}: {error}") from None
    if not isinstance(provider, type) or not issubclass(provider, ChannelProvider):
        raise UsageError(f"{args.provider} is not a ChannelProvider subclass")
    try:
        document = manifest(args.base_url, provider, args.prefix)
    except ValidationError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(document, indent=2))
    return EXIT_OK
