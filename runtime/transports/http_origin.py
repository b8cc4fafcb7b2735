"""Events to an HTTP origin: `POST {"events": [...]}` on pooled keep-alive connections."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.transports.base import OriginUnavailable
from runtime.transports.http1_client import ClientResponse, HttpClient, HttpClientError

USER_AGENT = "wsgateway-node"


def json_client(url: str, token: str, connections: int, timeout: float) -> HttpClient:
    """A keep-alive client that POSTs JSON to an origin, with its bearer token when set."""
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return HttpClient(url, max_connections=connections, timeout=timeout, headers=headers)


async def post_json(
    client: HttpClient, body: bytes, name: str, failure: type[Exception]
) -> ClientResponse:
    """POST `body`; no answer, or an answer other than 2xx, raises `failure` saying which."""
    try:
        response = await client.request("POST", body)
    except HttpClientError as exc:
        raise failure(str(exc)) from exc
    if not 200 <= response.status < 300:
        detail = response.body[:200].decode("utf-8", "replace")
        raise failure(f"{name} answered {response.status}: {detail}")
    return response


class HttpOrigin:
    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        concurrency: int = 4,
        max_batch_events: int = 500,
        max_batch_bytes: int = 4 << 20,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.concurrency = concurrency
        self.max_batch_events = max_batch_events
        self.linger = 0.0
        self.max_batch_bytes = max_batch_bytes
        # One event alone must respect the request bound the origin was promised.
        self.max_event_bytes = max_batch_bytes
        # One connection per request slot: the pump never has more requests in flight.
        self._client = json_client(url, token, concurrency, timeout)

    async def start(self) -> None:
        """Connections open on first use."""

    async def close(self) -> None:
        await self._client.close()

    async def deliver(self, events: Sequence[bytes]) -> None:
        body = b'{"events":[' + b",".join(events) + b"]}"
        await post_json(self._client, body, "origin", OriginUnavailable)
