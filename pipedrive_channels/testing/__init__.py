"""A fake Pipedrive server for testing code that talks to the Channels API, or writes notes on persons.

:class:`FakePipedrive` is a real HTTP server (``aiohttp.web``) on ``127.0.0.1`` with an ephemeral port. It
serves the four Channels endpoints and v1 notes (``/notes``, ``/notes/{id}``) under both ``/v1`` and ``/api/v1``,
v2 persons (``/api/v2/persons``, ``/persons/{id}``, ``/persons/search``), v1 webhooks (``/webhooks``,
``/webhooks/{id}``), ``/users/me`` and the OAuth token endpoint, and validates requests on its own, independently
of the SDK. It delivers webhooks v2 for the changes it makes (persons, notes, channels, messages) to the webhooks
registered on it, with their Basic credentials, retries and ``meta.attempt``, so a bot is tested end to end::

    async with FakePipedrive(webhook_delay_scale=0.01) as fake:  # retries after 0.03, 0.3 and 1.5 s
        ...  # POST /v1/webhooks with the bot's URL, then:
        fake.agent_adds_note(person_id, "Reply: hi")  # an agent in the app: change_source "app"
        await fake.webhooks_idle()
        assert fake.webhook_deliveries[-1].status == 200
 Every API answer carries the ``x-ratelimit-*`` headers,
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
against. Its parts: ``_server`` (lifecycle, knobs, what it holds), ``_routes`` (routes, recording, token tally,
listening), ``_oauth`` (the OAuth authority), ``_faults`` (the fault plan), ``_rate`` (the rate windows),
``_costs`` (what each route costs), ``_store`` (channels, messages, collections), ``_validation`` (the Channels
request checks), ``_persons`` (persons and their search), ``_notes`` (notes), ``_webhooks`` (the webhooks
registry and ``/users/me``), ``_deliveries`` (webhooks v2 deliveries), ``_agent`` (an agent in the app: the
``agent_*`` knobs), ``_params`` (path and query checks), ``_envelopes`` (the error bodies) and ``_process`` (its
own process).
"""

from ._deliveries import WebhookDelivery
from ._process import main
from ._rate import busiest_window
from ._server import FakePipedrive, RecordedRequest

__all__ = ["FakePipedrive", "RecordedRequest", "WebhookDelivery", "busiest_window", "main"]
