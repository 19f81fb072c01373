"""Conversations into today's Pipedrive: transcripts as notes on the matched person.

Pipedrive removed the Channels API on 2026-02-01; conversations it held were kept as notes, and integrators now
write chat history the same way: :class:`NotesTarget` delivers a back-fill (``backfill(..., target=...)``) or a
live service's messages as notes (v1 ``/notes``) on the person found by the conversation's :class:`Contact`
(v2 ``/persons/search``) or created for it.
"""

from __future__ import annotations

from ._contact import Contact
from ._target import NotesTarget

__all__ = ["Contact", "NotesTarget"]
