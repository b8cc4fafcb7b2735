"""How clients reach an environment: names, TLS, allowed browser origins, the firewall.

Production is the default. An environment serves TLS (a certificate per region, or a Route 53
hosted zone from which the stack makes DNS-validated certificates and the records) unless it says
`allowPlaintext: true`; with TLS it names the browser origins it serves (`allowedOrigins`) unless
it says `allowAnyOrigin: true`; a WAF web ACL and deletion protection are on unless switched off.
Every rule is checked here, before any construct exists, with a message naming the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.config_reader import ConfigError, SettingsReader
from runtime.core.browser_origins import compile_allowed_origins

HOSTED_ZONE_SETTINGS = ("name", "id")
# AWS WAF counts requests per source IP over a window; 5 minutes is its default evaluation window.
# Every WebSocket handshake is one request (frames after the upgrade are not requests).
WAF_RATE_LIMIT_DEFAULT = 2000
WAF_RATE_LIMITS = (10, 2_000_000_000)  # what AWS WAF accepts for a rate-based rule's limit

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")


@dataclass(frozen=True, kw_only=True)
class HostedZone:
    """A public Route 53 hosted zone the environment's names live in (given, never looked up)."""

    name: str
    zone_id: str


@dataclass(frozen=True, kw_only=True)
class Entry:
    """The public side of one environment; defaults are production choices."""

    hosted_zone: HostedZone | None = None
    global_name: str | None = None
    domain_names: Mapping[str, str] = field(default_factory=dict)
    certificate_arns: Mapping[str, str] = field(default_factory=dict)
    allow_plaintext: bool = False
    allowed_origins: tuple[str, ...] = ()
    allow_any_origin: bool = False
    waf: bool = True
    waf_rate_limit: int = WAF_RATE_LIMIT_DEFAULT
    deletion_protection: bool = True

    def tls(self, region: str) -> bool:
        return self.hosted_zone is not None or region in self.certificate_arns

    def node_environment(self) -> dict[str, str]:
        """ALLOWED_ORIGINS for the node; absent, the node lets every origin in."""
        if not self.allowed_origins:
            return {}
        return {"ALLOWED_ORIGINS": ",".join(self.allowed_origins)}


def read_entry(reader: SettingsReader, regions: tuple[str, ...]) -> Entry:
    """The entry settings of one environment, with the secure-by-default rules applied."""
    where = reader.where
    zone = _hosted_zone(reader.section("hostedZone", HOSTED_ZONE_SETTINGS))
    global_name = reader.text("globalName", _DOMAIN, "a DNS name such as ws.example.com")
    if global_name is not None and zone is None:
        raise ConfigError(
            f"{where}.globalName needs hostedZone: the stacks create its latency records there"
        )
    if zone is not None:
        global_name = global_name or f"ws.{zone.name}"
        _check_in_zone(f"{where}.globalName", global_name, zone)
    certificate_arns = reader.certificates(regions)
    domain_names = reader.per_region("domainName", regions, _domain)
    for region in certificate_arns:
        if region not in domain_names and zone is None:
            raise ConfigError(
                f"{where}.certificateArn.{region} needs domainName for {region}: the name on "
                "the certificate, which clients connect to"
            )
    if zone is not None:
        assert global_name is not None
        domain_names = {
            region: domain_names.get(region, f"{region}.{global_name}") for region in regions
        }
        for region, name in domain_names.items():
            _check_in_zone(f"{where}.domainName.{region}", name, zone)
            if name == global_name:
                raise ConfigError(
                    f"{where}.domainName.{region} must differ from globalName {global_name}: "
                    "that name holds the latency records of every region"
                )
        if len(set(domain_names.values())) != len(domain_names):
            raise ConfigError(
                f"{where}.domainName must give each region its own name in hostedZone "
                f"(got {dict(domain_names)!r})"
            )
    entry = Entry(
        hosted_zone=zone,
        global_name=global_name,
        domain_names=domain_names,
        certificate_arns=certificate_arns,
        allow_plaintext=reader.boolean("allowPlaintext", False),
        allowed_origins=_allowed_origins(reader),
        allow_any_origin=reader.boolean("allowAnyOrigin", False),
        waf=reader.boolean("waf", True),
        waf_rate_limit=reader.integer("wafRateLimit", *WAF_RATE_LIMITS, WAF_RATE_LIMIT_DEFAULT),
        deletion_protection=reader.boolean("deletionProtection", True),
    )
    if "wafRateLimit" in reader.raw and not entry.waf:
        raise ConfigError(f"{where}.wafRateLimit applies only with waf true")
    return entry


def check_secure(reader: SettingsReader, entry: Entry, regions: tuple[str, ...]) -> None:
    """TLS, or a plain opt-out; with TLS, named browser origins, or a plain opt-out.

    Checked last, so a mistake elsewhere in the settings is reported first.
    """
    where = reader.where
    plaintext = [region for region in regions if not entry.tls(region)]
    if plaintext and not entry.allow_plaintext:
        raise ConfigError(
            f"{where} would serve plain ws:// (no TLS) in {', '.join(plaintext)}: set hostedZone "
            "(the stack then makes DNS-validated certificates and the records), or certificateArn "
            "and domainName for every region, or say allowPlaintext: true to serve without TLS"
        )
    if entry.allow_plaintext and not plaintext:
        raise ConfigError(
            f"{where}.allowPlaintext is true but every region has TLS: remove allowPlaintext"
        )
    if entry.allow_any_origin and entry.allowed_origins:
        raise ConfigError(f"{where}.allowAnyOrigin and allowedOrigins do not go together: keep one")
    tls = [region for region in regions if entry.tls(region)]
    if tls and not entry.allowed_origins and not entry.allow_any_origin:
        raise ConfigError(
            f"{where}.allowedOrigins is required with TLS: the browser origins allowed to open "
            "connections (e.g. ['https://app.example.com']), against cross-site WebSocket "
            "hijacking; or say allowAnyOrigin: true if any site may connect"
        )


def _allowed_origins(reader: SettingsReader) -> tuple[str, ...]:
    if reader.raw.get("allowedOrigins") is None:
        return ()
    if isinstance(reader.raw["allowedOrigins"], list) and "*" in reader.raw["allowedOrigins"]:
        raise ConfigError(
            f"{reader.where}.allowedOrigins must not hold '*': say allowAnyOrigin: true instead"
        )
    origins = reader.strings(
        "allowedOrigins",
        re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s,]+$", re.IGNORECASE),
        "a browser origin such as https://app.example.com or https://*.example.com",
    )
    try:
        compile_allowed_origins(origins)
    except ValueError as exc:
        raise ConfigError(f"{reader.where}.allowedOrigins: {exc}") from None
    return origins


def _hosted_zone(reader: SettingsReader | None) -> HostedZone | None:
    if reader is None:
        return None
    name = reader.text("name", _DOMAIN, "the zone's DNS name, such as example.com", required=True)
    zone_id = reader.text("id", _ZONE_ID, "the zone's ID, such as Z0123456789ABC", required=True)
    assert name is not None and zone_id is not None
    return HostedZone(name=name, zone_id=zone_id)


def _check_in_zone(key: str, name: str, zone: HostedZone) -> None:
    if not name.endswith(f".{zone.name}"):
        raise ConfigError(f"{key} must be a name inside hostedZone {zone.name} (got {name!r})")


def _domain(text: str) -> str | None:
    return None if _DOMAIN.fullmatch(text) else "must be a DNS name such as ws.example.com"
