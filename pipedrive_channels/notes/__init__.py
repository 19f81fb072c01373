"""Conversations into today's Pipedrive: transcripts as notes on the matched person.

Pipedrive removed the Channels API on 2026-02-01; conversations it held were kept as notes, and integrators now
write chat history the same way.
"""

from __future__ import annotations

from ._contact import Contact

__all__ = ["Contact"]
