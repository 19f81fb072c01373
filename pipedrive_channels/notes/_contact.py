"""The customer of a conversation, as the input names them: a Pipedrive person's id, or what to find them by."""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import ValidationError

__all__ = ["MAX_CONTACT_CHARS", "Contact"]

MAX_CONTACT_CHARS = 255
"""The longest name, phone or email a contact may hold: Pipedrive's limit on a person's name (and far past any real
phone number or email address)."""


def _optional_text(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str) and len(value) > MAX_CONTACT_CHARS:
        raise ValidationError(attribute.name, f"must be at most {MAX_CONTACT_CHARS} characters, got {len(value)}")
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ValidationError(attribute.name, f"must be a non-empty printable string or None, got {value!r}")


def _optional_person_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not int or value <= 0):
        raise ValidationError(attribute.name, f"must be a positive integer or None, got {value!r}")


def _at_least_one(instance: Contact) -> None:
    if instance.person_id is None and instance.name is None and instance.phone is None and instance.email is None:
        raise ValidationError("contact", "needs a person_id, a name, a phone or an email")


@attrs.frozen
class Contact:
    """A conversation's customer: ``person_id`` is used as given (no search); otherwise the person is searched by
    ``phone``, then by ``email``, and created (named ``name``, else the phone or email) when none matches.

    At least one field is set; each is a non-empty printable string of at most :data:`MAX_CONTACT_CHARS`
    characters (``person_id`` a positive integer, as Pipedrive numbers persons).
    """

    person_id: int | None = attrs.field(default=None, validator=_optional_person_id)
    name: str | None = attrs.field(default=None, validator=_optional_text)
    phone: str | None = attrs.field(default=None, validator=_optional_text)
    email: str | None = attrs.field(default=None, validator=_optional_text)

    def __attrs_post_init__(self) -> None:
        _at_least_one(self)
