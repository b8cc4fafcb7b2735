"""Reading one environment's settings out of cdk.json, each value checked where it is read.

infra/config.py says which settings exist and what they mean; this module holds the typed reads
they share (integers in a range, https URLs, per-region values, function ARNs), so every error
names the setting, the rule and the value the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting of cdk.json context is missing, unknown or out of range."""


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_CERTIFICATE = re.compile(r"^arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[\w-]+$")
# A GraphQL origin: a function's name, or its ARN, optionally with a version or alias.
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):\d{12}:function:[A-Za-z0-9_-]{1,64}"
    r"(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)


class SettingsReader:
    """Reads the settings of one environment, each checked with a message naming it."""

    def __init__(self, where: str, raw: Mapping[str, Any]) -> None:
        self.where = where
        self.raw = raw

    def _get(self, key: str) -> Any:
        return self.raw.get(key)

    def _fail(self, key: str, rule: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.where}.{key} {rule} (got {value!r})")

    def regions(self) -> tuple[str, ...]:
        value = self._get("regions")
        if not isinstance(value, list) or not value:
            raise self._fail("regions", "is required: a list of AWS regions", value)
        for region in value:
            if not isinstance(region, str) or not _REGION.fullmatch(region):
                raise self._fail("regions", "must list region names such as us-east-1", region)
        if len(set(value)) != len(value):
            raise self._fail("regions", "must not repeat a region", value)
        return tuple(value)

    def account(self) -> str | None:
        value = self._get("account")
        if value is None:
            return None
        if not isinstance(value, str) or not _ACCOUNT.fullmatch(value):
            raise self._fail("account", "must be a 12-digit AWS account ID as a string", value)
        return value

    def integer(self, key: str, low: int, high: int, default: int, also: str = "") -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(key, f"must be an integer from {low} to {high}{also}", value)
        return value

    def optional_integer(self, key: str, low: int, high: int, what: str) -> int | None:
        if self.raw.get(key) is None:
            return None
        return self.integer(key, low, high, low, f" ({what})")

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false", value)
        return value

    def choice(self, key: str, options: tuple[Any, ...], default: Any, also: str = "") -> Any:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or value not in options:
            shown = ", ".join(str(option) for option in options)
            raise self._fail(key, f"must be one of {shown}{also}", value)
        return value

    def number(self, key: str, low: float, high: float) -> float | None:
        """An optional number (an integer or not); None when absent."""
        value = self._get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self._fail(key, f"must be a number from {low:g} to {high:g}", value)
        return value

    def limit_burst(self, key: str, rate_key: str, high: int) -> int | None:
        """A burst belongs to its rate: alone, it would silently limit nothing."""
        if self._get(key) is not None and not self._get(rate_key):
            raise self._fail(key, f"applies only with {rate_key} above 0", self._get(key))
        return self.optional_integer(key, 1, high, "handshakes in a burst")

    def text(
        self, key: str, pattern: re.Pattern[str], what: str, *, required: bool = False
    ) -> str | None:
        value = self._get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            rule = f"is required: {what}" if value is None else f"must be {what}"
            raise self._fail(key, rule, value)
        return value

    def strings(self, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        """A required, non-empty list of strings, each matching `pattern`."""
        value = self._get(key)
        if not isinstance(value, list) or not value:
            raise self._fail(key, f"is required: a list, each {what}", value)
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise self._fail(key, f"must list strings, each {what}", item)
        return tuple(value)

    def required_https_url(self, key: str) -> str:
        url = self.https_url(key, required=True)
        assert url is not None  # required: absent raises
        return url

    def https_url(self, key: str, *, required: bool = False) -> str | None:
        """Nodes reach it through their security group, which opens TCP 443 outbound only."""
        value = self._get(key)
        if value is None and not required:
            return None
        rule = "must be an https:// URL on port 443, with no user:password@"
        if not isinstance(value, str):
            raise self._fail(key, f"is required and {rule}" if required else rule, value)
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise self._fail(key, rule, value) from None
        if parts.scheme != "https" or not parts.hostname or port not in (None, 443):
            raise self._fail(key, rule, value)
        if parts.username is not None or parts.password is not None:
            raise self._fail(key, rule, "<redacted>")
        return value

    def section(self, key: str, known: tuple[str, ...]) -> SettingsReader | None:
        """A setting that is an object of settings, itself read by a SettingsReader."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._fail(key, f"must be an object with {', '.join(known)}", value)
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigError(
                f"{self.where}.{key} has unknown settings {unknown}; known: {', '.join(known)}"
            )
        return SettingsReader(f"{self.where}.{key}", value)

    def per_region(
        self, key: str, regions: tuple[str, ...], check: Callable[[str], str | None]
    ) -> dict[str, str]:
        """A string for every region, or an object naming a value per region."""
        value = self._get(key)
        if value is None:
            return {}
        by_region = value if isinstance(value, Mapping) else dict.fromkeys(regions, value)
        for region, item in by_region.items():
            if region not in regions:
                raise self._fail(key, f"names a region not in regions {list(regions)}", region)
            if not isinstance(item, str):
                raise self._fail(key, "must be a string or an object of region: string", item)
            problem = check(item)
            if problem:
                raise self._fail(f"{key}.{region}", problem, item)
        return dict(by_region)

    def certificates(self, regions: tuple[str, ...]) -> dict[str, str]:
        """ACM certificates are regional: each must be in the region whose ALB uses it."""
        arns = self.per_region("certificateArn", regions, _certificate_problem)
        for region, arn in arns.items():
            match = _CERTIFICATE.fullmatch(arn)
            assert match is not None
            if match["region"] != region:
                raise self._fail(
                    f"certificateArn.{region}",
                    f"must be a certificate in {region} (ACM certificates are regional); "
                    "give one per region as an object",
                    arn,
                )
        return arns

    def functions(
        self, key: str, regions: tuple[str, ...], *, required: bool = False
    ) -> dict[str, str]:
        """Nodes invoke their own region's Lambda API, which reaches that region's functions
        only: a name means the function of that name in each region, an ARN must be in the
        region it serves, and an object must name a function for every region.
        """
        if required and self._get(key) is None:
            raise self._fail(key, "is required: a Lambda function name or ARN", None)
        functions = self.per_region(key, regions, _function_problem)
        missing = [region for region in regions if region not in functions]
        if functions and missing:
            rule = f"must name a function for every region; missing {missing}"
            raise self._fail(key, rule, self._get(key))
        for region, function in functions.items():
            match = _FUNCTION_ARN.fullmatch(function)
            if match is not None and match["region"] != region:
                raise self._fail(
                    f"{key}.{region}",
                    f"must be a function in {region} (nodes invoke their own region's Lambda "
                    "API); give one per region as an object, or a name for every region",
                    function,
                )
        return functions


def _function_problem(text: str) -> str | None:
    if _FUNCTION_NAME.fullmatch(text) or _FUNCTION_ARN.fullmatch(text):
        return None
    return (
        "must be a Lambda function name (letters, digits, - and _; at most 64) or ARN "
        "(arn:<partition>:lambda:<region>:<account>:function:<name>[:<alias or version>])"
    )


def _certificate_problem(text: str) -> str | None:
    if _CERTIFICATE.fullmatch(text):
        return None
    return (
        "must be an ACM certificate ARN (arn:<partition>:acm:<region>:<account>:certificate/<id>)"
    )
