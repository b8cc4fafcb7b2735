"""Which browser `Origin` headers may open connections: a defence against cross-site WebSocket
hijacking. (The *origin* elsewhere in this code base is the application backend; this module is
only about the header browsers send.)"""

from __future__ import annotations

import re
from collections.abc import Sequence

from websockets.typing import Origin


def compile_allowed_origins(values: Sequence[str]) -> list[Origin | re.Pattern[str] | None] | None:
    """Turn configured values into what the websockets server checks `Origin` against.

    Exact values match exactly; `*` in a host stands for one or more DNS labels
    (`https://*.example.com` allows `https://a.b.example.com`, not `https://example.com`).
    A lone `*` (or nothing configured) allows every origin. Requests with no `Origin` header are
    let in: browsers always send one, so its absence means a non-browser client, which the check
    does not concern.
    """
    if not values or "*" in values:
        return None
    allowed: list[Origin | re.Pattern[str] | None] = [None]
    for value in values:
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/?#\s]+", value, re.IGNORECASE):
            raise ValueError(f"allowed origin must look like scheme://host[:port] (got {value!r})")
        if "*" not in value:
            allowed.append(Origin(value.lower()))
            continue
        scheme, host = value.split("://", 1)
        if not host.startswith("*.") or "*" in host[2:]:
            raise ValueError(
                f"a wildcard may only stand first in the host, as in https://*.example.com "
                f"(got {value!r})"
            )
        pattern = (
            re.escape(scheme.lower() + "://")
            + r"[a-z0-9-]+(\.[a-z0-9-]+)*"
            + re.escape(host[1:].lower())
        )
        allowed.append(re.compile(pattern, re.IGNORECASE))
    return allowed
