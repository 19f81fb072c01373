"""Paging a list endpoint: v1 by offset, v2 by cursor, and the checks that every page moves on.

A server that repeats an offset or a cursor would be paged for ever; a page whose paging fields have an odd shape
would be misread. Either is an :class:`~pipedrive_channels.errors.ApiError` naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .errors import ApiError
from .models import ApiResponse

__all__ = ["walk"]


async def walk(
    fetch: Callable[[dict[str, Any]], Awaitable[ApiResponse]], version: str, params: Mapping[str, Any] | None
) -> AsyncIterator[Any]:
    """Yield the items of every page ``fetch`` gets for a query, ``params`` and then the next page's ``start``
    (v1) or ``cursor`` (v2), until the last page; a page's items are yielded only once its paging fields check.
    """
    query = dict(params or {})
    cursors = {query["cursor"]} if "cursor" in query else set()  # every cursor sent, to catch a cycle
    while True:
        page = await fetch(query)
        items = _page_field(page, page.data, "data", list)
        additional = _page_field(page, page.additional_data, "additional_data", dict)
        key, position = (
            ("start", _next_start(page, additional, int(query.get("start", 0))))
            if version == "v1"
            else ("cursor", _next_cursor(page, additional, cursors))
        )
        for item in items:
            yield item
        if position is None:
            return
        query[key] = position


_Field = TypeVar("_Field", list[Any], dict[str, Any], str)


def _page_error(page: ApiResponse, message: str) -> ApiError:
    envelope = {"data": page.data, "additional_data": page.additional_data}
    return ApiError(page.status, message, body=envelope, headers=page.headers)


def _page_field(page: ApiResponse, value: Any, field: str, kind: type[_Field]) -> _Field:
    """A page's ``field`` if it is a ``kind``, empty if missing or null; any other value is an error naming it."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise _page_error(page, f"{field} of a page must be a {kind.__name__} or null, got {type(value).__name__}")
    return value


def _next_start(page: ApiResponse, additional: dict[str, Any], start: int) -> int | None:
    """The offset of the next v1 page (``None`` after the last), which must lie past this page's ``start``."""
    pagination = _page_field(page, additional.get("pagination"), "additional_data.pagination", dict)
    more = pagination.get("more_items_in_collection")
    if not isinstance(more, bool | None):
        raise _page_error(page, f"additional_data.pagination.more_items_in_collection must be a bool, got "
                                f"{type(more).__name__}")
    if not more:
        return None
    next_start = pagination.get("next_start", start + len(page.data or ()))
    if isinstance(next_start, bool) or not isinstance(next_start, int) or next_start <= start:
        raise _page_error(page, f"additional_data.pagination.next_start {next_start!r} does not move past start "
                                f"{start}: paging would never end")
    return next_start


def _next_cursor(page: ApiResponse, additional: dict[str, Any], sent: set[str]) -> str | None:
    """The cursor of the next v2 page (``None`` after the last), which must be one not ``sent`` before."""
    cursor = _page_field(page, additional.get("next_cursor"), "additional_data.next_cursor", str)
    if not cursor:
        return None
    if cursor in sent:
        raise _page_error(page, f"additional_data.next_cursor {cursor!r} was sent before: paging would never end")
    sent.add(cursor)
    return cursor
