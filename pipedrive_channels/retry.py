"""Retry policy for 429, 5xx and dropped connections, on tenacity, every attempt charged through the budget.

The first attempt runs without any retry machinery: a call that succeeds pays nothing for retrying. Only
after a failure worth retrying does :meth:`RetryPolicy.retry` build tenacity's ``AsyncRetrying`` (stop, wait
and retry predicates) and replay the failure into it, so its attempt count is the call's.

The wait: on 429, the server's word first, ``Retry-After`` in seconds or as an HTTP date, else
``x-ratelimit-reset``, never less, plus a little jitter (a 503's ``Retry-After``, for maintenance, likewise).
Otherwise exponential backoff with full jitter, capped at ``backoff_max``. A 429 that says the daily budget is
spent is not retried: it raises ``BudgetExhaustedError`` at once. Whatever the call does next, the shared budget is
held for the server's wait as soon as the answer is seen (for a spent daily budget, ``Retry-After``, else a minute),
so every task and process sharing it pauses, even when this call gives up. One parser reads the headers
(``RateHeaders``): every wait is finite and capped at a day.

Which calls may be repeated (see :class:`Repeat`): receiving a message is idempotent (same ``id`` updates it);
deletes are idempotent, and a 404 on a retried delete means an earlier attempt did it; adding a channel is
repeated only after answers that say it was not processed (429, 503), unless ``retry_unsafe=True``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import attrs
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base

from .budget import Budget
from .budget._rate_headers import RateHeaders
from .errors import ApiError, BudgetExhaustedError, NotFoundError, PipedriveError, RateLimitError, TransportError

__all__ = ["Repeat", "RetryPolicy", "retry_after", "server_wait"]

_T = TypeVar("_T")
_log = logging.getLogger("pipedrive_channels")

# Answers that say the request was not processed, so even a non-idempotent call may be sent again.
_NOT_PROCESSED = frozenset({429, 503})

_DAILY_SPENT_PAUSE = 60.0
"""Seconds the budget pauses after a 429 that says the daily budget is spent without saying until when."""


class Repeat(enum.Enum):
    """What sending a call twice does, which decides when it may be retried."""

    IDEMPOTENT = "idempotent"
    """Sending it again has the same effect (receive_message: the same ``id`` updates the message)."""
    DELETE = "delete"
    """Idempotent, and a 404 after an ambiguous failure means an earlier attempt did it."""
    UNSAFE = "unsafe"
    """Sending it again may act twice (add_channel): retried after 429/503 only, unless ``retry_unsafe``."""


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds ``Retry-After`` asks for, given in seconds or as an HTTP date, at most a day.

    ``None`` if absent or unusable (not a number or a date, negative, infinite); a date in the past is 0.

    :param now: the current epoch time, for HTTP dates (default: ``time.time()``).
    """
    return RateHeaders.from_http(headers, now).retry_after


def server_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429 asks to wait: ``Retry-After``, else ``x-ratelimit-reset`` (the burst window's, a few s at most)."""
    return RateHeaders.from_http(headers, now).server_wait


def _daily_budget_spent(error: BaseException) -> bool:
    return isinstance(error, RateLimitError) and RateHeaders.from_http(error.headers).daily_spent


@attrs.frozen
class RetryPolicy:
    """When and how long to wait before sending a failed call again.

    :param max_attempts: attempts in all, the first included (1: never retry).
    :param max_elapsed: seconds from the first attempt after which no new attempt starts (nor a wait past it).
    :param backoff_base: the first backoff in seconds; it doubles per attempt.
    :param backoff_max: the longest backoff (the server's own ``Retry-After`` is never cut).
    :param jitter: full jitter on backoffs, and a little on top of the server's waits.
    :param retry_statuses: HTTP statuses worth another attempt.
    :param retry_connection_errors: retry connection errors and timeouts.
    :param retry_unsafe: also repeat non-idempotent calls (add_channel) after ambiguous failures (timeout,
        500, 502, 504, a connection dropped after sending), at the risk of acting twice.
    :param on_retry: called as ``on_retry(attempt, wait, error)`` before each wait (``attempt`` is the number of
        the attempt that failed); it may be a coroutine function.
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_elapsed: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    backoff_base: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    jitter: bool = True
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
    retry_connection_errors: bool = True
    retry_unsafe: bool = False
    on_retry: Callable[[int, float, Exception], Awaitable[None] | None] | None = attrs.field(
        default=None, eq=False
    )

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def should_retry(self, error: BaseException, repeat: Repeat) -> bool:
        """Whether ``error`` is worth another attempt of a call that repeats as ``repeat``."""
        if isinstance(error, ApiError):
            if error.status not in self.retry_statuses or _daily_budget_spent(error):
                return False
            return repeat is not Repeat.UNSAFE or self.retry_unsafe or error.status in _NOT_PROCESSED
        if isinstance(error, TransportError):
            if not self.retry_connection_errors:
                return False
            return repeat is not Repeat.UNSAFE or self.retry_unsafe or not error.request_sent
        return False

    def wait(self, error: BaseException, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` failed with ``error``."""
        asked = _pause(error)
        if asked is not None:  # the server's word, never less, plus a little jitter
            return asked + (random.uniform(0.0, min(1.0, 0.1 * asked + 0.05)) if self.jitter else 0.0)
        backoff = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return random.uniform(0.0, backoff) if self.jitter else backoff

    async def retry(
        self,
        first_error: PipedriveError,
        attempt: Callable[[], Awaitable[_T]],
        *,
        repeat: Repeat,
        budget: Budget,
        started: float,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> _T:
        """Carry on after the first attempt failed with ``first_error``: wait, send again, until done or given up.

        :param attempt: sends the call once more (charging the budget) and returns its result.
        :param started: ``clock()`` when the first attempt started; ``deadline`` likewise, or None.
        :param clock: the monotonic clock ``started``, ``deadline`` and ``elapsed`` are read on.
        :param sleep: waits between attempts (tests pass a fake one that moves their clock on).
        :raises PipedriveError: the last error, with ``attempts`` and ``elapsed`` set.
        """
        _hold(budget, first_error)
        if _daily_budget_spent(first_error):
            raise _annotate(_exhausted(first_error, clock), 1, started, clock)
        if self.max_attempts == 1 or not self.should_retry(first_error, repeat):
            raise _annotate(first_error, 1, started, clock)
        replay: list[PipedriveError] = [first_error]
        ambiguous_failure = False

        async def again() -> _T:
            nonlocal ambiguous_failure
            if replay:
                raise replay.pop()  # tenacity's attempt 1 is the one that already failed
            try:
                return await attempt()
            except NotFoundError:
                if repeat is Repeat.DELETE and ambiguous_failure:
                    return None  # type: ignore[return-value]  # an earlier attempt deleted it
                raise
            except PipedriveError as error:
                _hold(budget, error)  # before tenacity decides whether to stop: the others pause either way
                raise

        async def before_sleep(state: RetryCallState) -> None:
            nonlocal ambiguous_failure
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, PipedriveError)
            ambiguous_failure = ambiguous_failure or _ambiguous(error)
            wait = state.upcoming_sleep
            _log.warning("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, error, wait)
            if self.on_retry is not None:
                result = self.on_retry(state.attempt_number, wait, error)
                if result is not None:
                    await result

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | _StopBefore(started, self.max_elapsed, deadline, clock),
            wait=lambda state: self.wait(_outcome_error(state), state.attempt_number),
            retry=retry_if_exception(lambda error: self.should_retry(error, repeat)),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        try:
            return await retrying(again)
        except PipedriveError as error:
            final = _exhausted(error, clock) if _daily_budget_spent(error) else error
        # Raised outside the except block: the exhausted error keeps the 429 as its cause, and nothing else is chained.
        raise _annotate(final, retrying.statistics.get("attempt_number", 1), started, clock)


class _StopBefore(stop_base):
    """Stop when the next attempt would start after ``max_elapsed`` from the first attempt, or past the deadline."""

    def __init__(self, started: float, max_elapsed: float, deadline: float | None, clock: Callable[[], float]) -> None:
        self.last_start = started + max_elapsed if deadline is None else min(started + max_elapsed, deadline)
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.last_start


def _pause(error: BaseException) -> float | None:
    """The wait the server asked for: a 429's Retry-After or window reset (a spent daily budget's Retry-After, else
    a minute), a 503's Retry-After (maintenance); None if it said nothing."""
    if isinstance(error, RateLimitError):
        rate = RateHeaders.from_http(error.headers)
        if rate.daily_spent:
            return _DAILY_SPENT_PAUSE if rate.retry_after is None else rate.retry_after
        return rate.server_wait
    if isinstance(error, ApiError) and error.status == 503:
        return retry_after(error.headers)
    return None


def _hold(budget: Budget, error: BaseException) -> None:
    """Hold the budget for the server's wait, so every task and process sharing it pauses, not only this call."""
    pause = _pause(error)
    if pause is not None:
        budget.hold(pause)


def _outcome_error(state: RetryCallState) -> BaseException:
    error = state.outcome.exception() if state.outcome else None
    assert error is not None
    return error


def _ambiguous(error: PipedriveError) -> bool:
    """Whether the failed attempt may have been processed (so a later 404 on a delete means it was)."""
    if isinstance(error, TransportError):
        return error.request_sent
    return isinstance(error, ApiError) and error.status >= 500


def _exhausted(error: PipedriveError, clock: Callable[[], float]) -> PipedriveError:
    wait = _pause(error)  # the time the budget is held for (a spent daily budget always has one)
    exhausted = BudgetExhaustedError(
        "Pipedrive says the company's daily token budget is spent",
        retry_at=None if wait is None else clock() + wait, retry_after=wait,
    )
    exhausted.__cause__ = error
    return exhausted


def _annotate(error: PipedriveError, attempts: int, started: float, clock: Callable[[], float]) -> PipedriveError:
    error.attempts = attempts
    error.elapsed = clock() - started
    return error
