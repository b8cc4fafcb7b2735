"""The entry point's settings, from WSGW_* environment variables, and the user's functions they
name: every one checked and imported at the first invocation, so a mistake fails at once with the
variable's name in the error."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

Event = dict[str, Any]
RouteFunction = Callable[[Event, Any], Any]

HANDLER_VARIABLE = "WSGW_HANDLER"
ROUTES_VARIABLE = "WSGW_ROUTE_HANDLERS"
GONE_VARIABLE = "WSGW_GONE_ROUTE"
ASYNC_CONNECT_VARIABLE = "WSGW_ASYNC_CONNECT"
POST_VIA_VARIABLE = "WSGW_POST_VIA"
CONNECTIONS_URL_VARIABLE = "WSGW_CONNECTIONS_URL"
CONNECTIONS_PORT_VARIABLE = "WSGW_CONNECTIONS_PORT"
CONNECTIONS_TOKEN_VARIABLE = "WSGW_CONNECTIONS_TOKEN"
CONNECTIONS_TIMEOUT_VARIABLE = "WSGW_CONNECTIONS_TIMEOUT"
MAX_ROUTE_KEY_LENGTH = 128

_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class HandlerSetupError(ValueError):
    """A WSGW_* setting that is missing or malformed, or names a function that cannot be found."""


# Settings ----------------------------------------------------------------------------------


def parse_route_handlers(text: str) -> dict[str, str]:
    """`WSGW_ROUTE_HANDLERS` as {route key: module.function}: JSON, or `route=ref,route=ref`."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise HandlerSetupError(f"{ROUTES_VARIABLE} is not valid JSON ({exc})") from None
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise HandlerSetupError(
                f'{ROUTES_VARIABLE} as JSON must map route keys to "module.function" strings'
            )
        routes = dict(document)
    else:
        routes = {}
        for item in text.split(","):
            route, equals, reference = (part.strip() for part in item.partition("="))
            if not equals:
                raise HandlerSetupError(
                    f"{ROUTES_VARIABLE} items must be route=module.function (got {item.strip()!r})"
                )
            if route in routes:
                raise HandlerSetupError(f"{ROUTES_VARIABLE} names route {route!r} twice")
            routes[route] = reference
    for route, reference in routes.items():
        if not 0 < len(route) <= MAX_ROUTE_KEY_LENGTH or route != route.strip():
            raise HandlerSetupError(
                f"{ROUTES_VARIABLE}: route keys must be 1 to {MAX_ROUTE_KEY_LENGTH} characters "
                f"without surrounding spaces (got {route!r})"
            )
        _check_reference(f"{ROUTES_VARIABLE}[{route!r}]", reference)
    return routes


def _check_reference(variable: str, reference: str) -> None:
    if not _REFERENCE.fullmatch(reference):
        raise HandlerSetupError(
            f"{variable} must be module.function, as in a Lambda handler setting "
            f"(got {reference!r})"
        )


@dataclass(frozen=True)
class ApiGatewaySettings:
    """What the entry point hands to whom, and where the @connections API is; checked at once."""

    handler: str = ""
    route_handlers: Mapping[str, str] = field(default_factory=dict)
    gone_route: str | None = "$disconnect"
    async_connect: str = "skip"
    post_via: str = "commands"
    connections_url: str = ""
    connections_port: int | None = None
    connections_token: str = ""
    connections_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.handler and not self.route_handlers:
            raise HandlerSetupError(
                f"set {HANDLER_VARIABLE} (module.function for every route) or "
                f"{ROUTES_VARIABLE} (for example $connect=app.connect,sendmessage=app.send)"
            )
        if self.handler:
            _check_reference(HANDLER_VARIABLE, self.handler)
        for route, reference in self.route_handlers.items():
            _check_reference(f"{ROUTES_VARIABLE}[{route!r}]", reference)
        if self.gone_route is not None and not 0 < len(self.gone_route) <= MAX_ROUTE_KEY_LENGTH:
            raise HandlerSetupError(
                f"{GONE_VARIABLE} must be $disconnect, none or a route key of 1 to "
                f"{MAX_ROUTE_KEY_LENGTH} characters (got {self.gone_route!r})"
            )
        if self.async_connect not in ("skip", "run"):
            raise HandlerSetupError(
                f"{ASYNC_CONNECT_VARIABLE} must be skip or run (got {self.async_connect!r})"
            )
        if self.post_via not in ("commands", "connections"):
            raise HandlerSetupError(
                f"{POST_VIA_VARIABLE} must be commands or connections (got {self.post_via!r})"
            )
        if self.connections_url and self.connections_port is not None:
            raise HandlerSetupError(
                f"set {CONNECTIONS_URL_VARIABLE} or {CONNECTIONS_PORT_VARIABLE}, not both"
            )
        if self.connections_url:
            parts = urlsplit(self.connections_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise HandlerSetupError(
                    f"{CONNECTIONS_URL_VARIABLE} must be an http:// or https:// URL such as "
                    f"http://10.0.0.5:8081 (got {self.connections_url!r})"
                )
        if self.connections_port is not None and not 0 < self.connections_port < 65536:
            raise HandlerSetupError(
                f"{CONNECTIONS_PORT_VARIABLE} must be a port from 1 to 65535 "
                f"(got {self.connections_port})"
            )
        if not 0 < self.connections_timeout <= 60:
            raise HandlerSetupError(
                f"{CONNECTIONS_TIMEOUT_VARIABLE} must be more than 0 and at most 60 seconds "
                f"(got {self.connections_timeout:g})"
            )
        if self.post_via == "connections" and not self.knows_connections_api:
            raise HandlerSetupError(
                f"{POST_VIA_VARIABLE}=connections needs {CONNECTIONS_URL_VARIABLE} or "
                f"{CONNECTIONS_PORT_VARIABLE}"
            )

    @property
    def knows_connections_api(self) -> bool:
        return bool(self.connections_url) or self.connections_port is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ApiGatewaySettings:
        gone = environ.get(GONE_VARIABLE, "$disconnect").strip() or "$disconnect"
        port_text = environ.get(CONNECTIONS_PORT_VARIABLE, "").strip()
        timeout_text = environ.get(CONNECTIONS_TIMEOUT_VARIABLE, "").strip() or "5"
        try:
            port = int(port_text) if port_text else None
        except ValueError:
            raise HandlerSetupError(
                f"{CONNECTIONS_PORT_VARIABLE} must be a port number (got {port_text!r})"
            ) from None
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise HandlerSetupError(
                f"{CONNECTIONS_TIMEOUT_VARIABLE} must be a number of seconds (got {timeout_text!r})"
            ) from None
        settings = cls(
            handler=environ.get(HANDLER_VARIABLE, "").strip(),
            route_handlers=parse_route_handlers(environ.get(ROUTES_VARIABLE, "")),
            gone_route=None if gone.lower() == "none" else gone,
            async_connect=environ.get(ASYNC_CONNECT_VARIABLE, "").strip().lower() or "skip",
            post_via=environ.get(POST_VIA_VARIABLE, "").strip().lower() or "commands",
            connections_url=environ.get(CONNECTIONS_URL_VARIABLE, "").strip(),
            connections_port=port,
            connections_token=environ.get(CONNECTIONS_TOKEN_VARIABLE, ""),
            connections_timeout=timeout,
        )
        if settings.post_via == "commands" and not environ.get("WSGW_ENVIRONMENT"):
            raise HandlerSetupError(
                "set WSGW_ENVIRONMENT (the gateway's environment name): post_to_connection and "
                "delete_connection publish to its commands topic "
                f"(or set {POST_VIA_VARIABLE}=connections)"
            )
        return settings


# The user's functions ----------------------------------------------------------------------


def load_function(reference: str, variable: str) -> RouteFunction:
    """Import `module.function`; errors name the setting that asked for it."""
    module_name, _, name = reference.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerSetupError(
            f"{variable}={reference}: cannot import module {module_name!r} ({exc})"
        ) from exc
    except Exception as exc:
        exc.add_note(f"while importing {module_name!r} for {variable}={reference}")
        raise
    function = getattr(module, name, None)
    if function is None:
        raise HandlerSetupError(
            f"{variable}={reference}: module {module_name!r} has no attribute {name!r}"
        )
    if not callable(function):
        raise HandlerSetupError(
            f"{variable}={reference}: {name!r} is a {type(function).__name__}, not a function"
        )
    return cast(RouteFunction, function)  # a callable the user named: its signature is theirs


@dataclass(frozen=True)
class RouteTable:
    """Which function each route key reaches, every one imported at the first invocation, so a
    bad name fails at once rather than when its rare route first comes."""

    every_route: RouteFunction | None
    routes: Mapping[str, RouteFunction]

    @classmethod
    def load(cls, settings: ApiGatewaySettings) -> RouteTable:
        every = load_function(settings.handler, HANDLER_VARIABLE) if settings.handler else None
        routes = {
            route: load_function(reference, f"{ROUTES_VARIABLE}[{route!r}]")
            for route, reference in settings.route_handlers.items()
        }
        return cls(every, routes)

    def function_for(self, route: str, *, message: bool = False) -> RouteFunction | None:
        """The route's own function, else WSGW_HANDLER's, else (messages only) $default's."""
        function = self.routes.get(route) or self.every_route
        if function is None and message:
            function = self.routes.get("$default")
        return function
