"""Events to an HTTP origin: `POST {"events": [...]}` on pooled keep-alive connections."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from runtime.transports.base import OriginUnavailable

USER_AGENT = "wsgateway-node"


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
        self.max_batch_bytes = max_batch_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, events: Sequence[bytes]) -> None:
        assert self._session is not None, "start() first"
        body = b'{"events":[' + b",".join(events) + b"]}"
        try:
            async with self._session.post(self.url, data=body, headers=self._headers) as response:
                if not 200 <= response.status < 300:
                    detail = (await response.text())[:200]
                    raise OriginUnavailable(f"origin answered {response.status}: {detail}")
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginUnavailable(f"{type(exc).__name__}: {exc}") from exc
