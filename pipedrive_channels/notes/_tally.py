"""What the notes target counts beyond records, for the run's report."""

from __future__ import annotations

import attrs

__all__ = ["Counts"]


@attrs.define
class Counts:
    """Persons found (by search), created and failed (contacts that matched no one), notes created and updated."""

    persons_found: int = 0
    persons_created: int = 0
    persons_failed: int = 0
    notes_created: int = 0
    notes_updated: int = 0

    def reset(self) -> None:
        """Start a new run's counts."""
        self.persons_found = self.persons_created = self.persons_failed = 0
        self.notes_created = self.notes_updated = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)
