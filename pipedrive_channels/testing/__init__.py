"""A fake Pipedrive server for testing code that talks to the Channels API, or writes notes on persons.

:class:`FakePipedrive` is a real HTTP server (``aiohttp.web``) on ``127.0.0.1`` with an ephemeral port. It
serves the four Channels endpoints and v1 notes (``/notes``, ``/notes/{id}``) under both ``/v1`` and ``/api/v1``,
v2 persons (``/api/v2/persons``, ``/persons/{id}``, ``/persons/search``) and the OAuth token endpoint, and
validates requests on its own, independently of the SDK. Every API answer carries the ``x-ratelimit-*`` headers,
and :attr:`FakePipedrive.tokens_spent` adds up the documented cost of each request it answered.
Knobs such as :attr:`FakePipedrive.latency` or :meth:`FakePipedrive.fail_next` inject the faults a client must survive::

    async with FakePipedrive() as fake:
        token = fake.issue_token()["access_token"]
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fake.base_url}/channels", json={"name": "Chat", "provider_channel_id": "c1"},
                            headers={"Authorization": f"Bearer {token}"})
        assert "c1" in fake.channels

Run ``python -m pipedrive_channels.testing --access-token TOKEN`` to serve it from its own process: it prints
``READY <root_url>`` once listening and stops on SIGTERM, SIGINT or (when stdin is a pipe) stdin EOF.

The fake imports nothing from the rest of ``pipedrive_channels``: it is the independent oracle the SDK is tested
against. Its parts: ``_server`` (lifecycle, knobs, what it holds), ``_routes`` (routes, recording, token tally),
``_oauth`` (the OAuth authority), ``_faults`` (the fault plan), ``_rate`` (the rate windows), ``_costs`` (what each
route costs), ``_store`` (channels, messages, collections), ``_validation`` (the Channels request checks),
``_persons`` (persons and their search), ``_notes`` (notes), ``_params`` (path and query checks), ``_envelopes``
(the error bodies) and ``_process`` (its own process).
"""

from ._process import main
from ._rate import busiest_window
from ._server import FakePipedrive, RecordedRequest

__all__ = ["FakePipedrive", "RecordedRequest", "busiest_window", "main"]
