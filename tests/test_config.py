"""Settings from flags and environment: precedence, defaults, and errors naming the setting."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields

import pytest

from runtime.config import (
    ConfigError,
    Settings,
    add_arguments,
    env_name,
    event_buffer_for,
    flag,
    host_port,
    load,
)
from runtime.wire.channels import ChannelRules
from runtime.wire.connection_id import NodeAddress

# The least a node needs: where events go, and a token for its command endpoint.
# A single node without a cluster, so no peer secret either.
REQUIRED = {
    "origin_url": "http://origin.test/events",
    "command_token": "secret",
    "local_only": "true",
}


def settings(environ: dict[str, str] | None = None, **args: str | None) -> Settings:
    return load({**REQUIRED, **args}, environ or {})


def test_defaults() -> None:
    loaded = settings()
    assert loaded == Settings(
        origin_url="http://origin.test/events", command_token="secret", local_only=True
    )
    assert loaded.listen == ("127.0.0.1", 8080)
    assert loaded.command_listen == ("127.0.0.1", 8081)
    assert loaded.origin_transport == "http"
    assert loaded.max_message_bytes == 256 * 1024
    assert loaded.region == "local"
    assert loaded.peer_advertise is None
    assert loaded.peer_address == NodeAddress("127.0.0.1", 9100)
    assert loaded.gone_events is True
    assert loaded.no_command_auth is False
    assert loaded.subprotocols == ()
    assert loaded.allowed_origins == ()


def test_none_flags_mean_unset() -> None:
    loaded = load({**REQUIRED, "max_message_bytes": None}, {"MAX_MESSAGE_BYTES": "2048"})
    assert loaded.max_message_bytes == 2048


def test_values_from_flags() -> None:
    loaded = settings(
        listen="0.0.0.0:9000",
        command_listen="[::1]:9001",
        max_message_bytes="1024",
        origin_request_timeout="2.5",
        subprotocols="graphql-ws, graphql-transport-ws,,",
        allowed_origins="https://*.example.com,http://localhost:3000",
        route_selection_expression="$request.body.action",
        peer_advertise="[2001:db8::1]:9100",
        gone_events="off",
        trust_forwarded_for="YES",
        region="eu-west-1",
        stage="prod",
        log_format="json",
        log_level="DEBUG",
    )
    assert loaded.listen == ("0.0.0.0", 9000)
    assert loaded.command_listen == ("::1", 9001)
    assert loaded.max_message_bytes == 1024
    assert loaded.origin_request_timeout == 2.5
    assert loaded.subprotocols == ("graphql-ws", "graphql-transport-ws")
    assert loaded.allowed_origins == ("https://*.example.com", "http://localhost:3000")
    assert loaded.route_selection_expression == "$request.body.action"
    assert loaded.peer_advertise == NodeAddress("2001:db8::1", 9100)
    assert loaded.gone_events is False
    assert loaded.trust_forwarded_for is True
    assert (loaded.region, loaded.stage) == ("eu-west-1", "prod")
    assert (loaded.log_format, loaded.log_level) == ("json", "DEBUG")


def test_values_from_the_environment() -> None:
    loaded = load(
        {},
        {
            "ORIGIN_URL": "https://origin.test/e",
            "COMMAND_TOKEN": "t",
            "MAX_CONNECTIONS": "5",
            "KEEPALIVE_INTERVAL": "0",
            "NO_COMMAND_AUTH": "true",
            "LOCAL_ONLY": "true",
            "UNRELATED": "x",
        },
    )
    assert loaded.origin_url == "https://origin.test/e"
    assert loaded.command_token == "t"
    assert loaded.max_connections == 5
    assert loaded.keepalive_interval == 0.0
    assert loaded.no_command_auth is True


def test_flag_beats_environment() -> None:
    environ = {"MAX_MESSAGE_BYTES": "4096", "REGION": "ap-south-1", "STAGE": "env-stage"}
    loaded = settings(environ, max_message_bytes="2048", region="us-west-2")
    assert loaded.max_message_bytes == 2048
    assert loaded.region == "us-west-2"
    assert loaded.stage == "env-stage"


def test_flag_beats_a_bad_environment_value() -> None:
    assert settings({"MAX_MESSAGE_BYTES": "12"}, max_message_bytes="2048").max_message_bytes == 2048


def test_empty_command_listen_disables_the_endpoint_and_its_token() -> None:
    loaded = load({"local_only": "true", "origin_url": "http://o.test", "command_listen": ""}, {})
    assert loaded.command_listen is None
    assert loaded.command_token == ""


def test_echo_transport_needs_no_origin_url() -> None:
    loaded = load({"local_only": "true", "origin_transport": "echo", "command_token": "t"}, {})
    assert loaded.origin_transport == "echo"
    assert loaded.origin_url == ""


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_message_bytes", "12", "must be between 1024 and 33554432 (got 12)"),
        ("max_message_bytes", "big", "must be an integer (got 'big')"),
        ("max_message_bytes", "33554433", "must be between 1024 and 33554432 (got 33554433)"),
        ("origin_concurrency", "0", "must be between 1 and 64 (got 0)"),
        ("max_connections", "1.5", "must be an integer (got '1.5')"),
        ("origin_request_timeout", "0", "must be between 0.1 and 300 (got 0)"),
        ("origin_request_timeout", "soon", "must be a number of seconds (got 'soon')"),
        ("origin_request_timeout", "nan", "must be between 0.1 and 300 (got nan)"),
        ("keepalive_interval", "-1", "must be between 0 and 86400 (got -1)"),
        ("ping_timeout", "inf", "must be between 0.1 and 3600 (got inf)"),
        ("no_command_auth", "maybe", "must be true or false (got 'maybe')"),
        ("gone_events", "2", "must be true or false (got '2')"),
        ("origin_transport", "kafka", "must be one of http, echo, sqs, sns, none (got 'kafka')"),
        ("log_format", "xml", "must be one of auto, json, text (got 'xml')"),
        ("log_level", "TRACE", "must be one of DEBUG, INFO, WARNING, ERROR (got 'TRACE')"),
        ("listen", "8080", "must be host:port"),
        ("listen", "localhost:http", "must be host:port"),
        ("listen", "localhost:65536", "must be host:port"),
        ("listen", ":8080", "must be host:port"),
        ("command_listen", "nowhere", "must be host:port"),
        ("peer_advertise", "node-1:9100", "must be an IP address and port (got 'node-1:9100')"),
        ("peer_advertise", "10.0.0.1:0", "port must be between 1 and 65535 (got 0)"),
        ("peer_listen", "node-1:9100", "must be an IP address and port (got 'node-1:9100')"),
        ("peer_listen", "0.0.0.0:0", "needs a fixed port"),
        ("peers", "10.0.0.1:9100,10.0.0.2", "must be host:port"),
        ("peers", "10.0.0.1:9100,node-2:9100", "must be an IP address and port"),
        ("peers_dns", "peers.local", "must be host:port"),
        ("peer_max_datagram", "9000", "must be between 512 and 8900 (got 9000)"),
        ("peer_max_datagram", "511", "must be between 512 and 8900 (got 511)"),
        ("peer_down_seconds", "0", "must be between 0.2 and 30 (got 0)"),
        ("region", "r" * 33, "must be 1 to 32 ASCII characters"),
        ("region", "", "must be 1 to 32 ASCII characters"),
        ("region", "régión", "must be 1 to 32 ASCII characters"),
        ("allowed_origins", "https://example.com/", "allowed origin must look like"),
        ("allowed_origins", "https://a.*.com", "a wildcard may only stand first"),
        ("route_selection_expression", "action", "route selection expression must look like"),
    ],
)
def test_bad_values_name_the_flag_or_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as from_flag:
        settings(**{name: value})
    assert str(from_flag.value).startswith(flag(name) + " ")
    assert message in str(from_flag.value)

    with pytest.raises(ConfigError) as from_env:
        settings({env_name(name): value})
    assert str(from_env.value).startswith(env_name(name) + " ")
    assert message in str(from_env.value)


def test_the_documented_message() -> None:
    with pytest.raises(ConfigError) as info:
        settings(max_message_bytes="12")
    assert str(info.value) == "--max-message-bytes must be between 1024 and 33554432 (got 12)"
    with pytest.raises(ConfigError) as info:
        settings({"MAX_MESSAGE_BYTES": "12"})
    assert str(info.value) == "MAX_MESSAGE_BYTES must be between 1024 and 33554432 (got 12)"


def test_origin_url_required_for_http_transport() -> None:
    with pytest.raises(ConfigError, match="--origin-url is required"):
        load({"command_token": "t"}, {})
    with pytest.raises(ConfigError, match="--origin-url is required"):
        load({"command_token": "t", "origin_transport": "http"}, {"ORIGIN_URL": ""})


@pytest.mark.parametrize("url", ["ftp://origin.test", "origin.test/events", "HTTP//x"])
def test_origin_url_must_be_http(url: str) -> None:
    with pytest.raises(
        ConfigError, match=re.escape(f"must start with http:// or https:// (got {url!r})")
    ):
        settings(origin_url=url)


def test_command_token_required_unless_no_command_auth() -> None:
    with pytest.raises(ConfigError, match="--command-token is required"):
        load({"origin_url": "http://o.test"}, {})
    with pytest.raises(ConfigError, match="--command-token is required"):
        load({"origin_url": "http://o.test", "no_command_auth": "false"}, {})
    loaded = load(
        {"local_only": "true", "origin_url": "http://o.test", "no_command_auth": "true"}, {}
    )
    assert loaded.no_command_auth is True
    assert loaded.command_token == ""
    assert load(
        {"local_only": "true", "origin_url": "http://o.test"}, {"NO_COMMAND_AUTH": "1"}
    ).no_command_auth


def test_command_listen_must_differ_from_listen() -> None:
    with pytest.raises(ConfigError, match="--command-listen must differ from --listen"):
        settings(listen="127.0.0.1:9000", command_listen="127.0.0.1:9000")
    # Port 0 means "any free port" for each, so both may ask for it.
    loaded = settings(listen="127.0.0.1:0", command_listen="127.0.0.1:0")
    assert loaded.listen == loaded.command_listen == ("127.0.0.1", 0)


def test_event_buffer_must_hold_two_messages() -> None:
    with pytest.raises(ConfigError, match=r"at least twice --max-message-bytes \(2097152; got"):
        settings(max_message_bytes=str(1024 * 1024), event_buffer_bytes=str(2 * 1024 * 1024 - 1))
    loaded = settings(max_message_bytes=str(1024 * 1024), event_buffer_bytes=str(2 * 1024 * 1024))
    assert loaded.event_buffer_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert host_port(text) == expected


def test_every_setting_has_a_flag_and_env_var() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    namespace = parser.parse_args(
        ["--max-message-bytes", "2048", "--origin-url", "http://o.test", "--command-token", "t"]
    )
    assert set(vars(namespace)) == {field.name for field in fields(Settings)}
    environ = {"MAX_MESSAGE_BYTES": "4096", "STAGE": "from-env", "LOCAL_ONLY": "1"}
    loaded = load(vars(namespace), environ)
    assert loaded.max_message_bytes == 2048
    assert loaded.stage == "from-env"
    help_text = parser.format_help()
    for field in fields(Settings):
        assert flag(field.name) in help_text
        assert env_name(field.name) in help_text


CLUSTER = {"origin_url": "http://origin.test/events", "command_token": "secret"}


def test_a_cluster_needs_a_peer_secret_unless_local_only() -> None:
    with pytest.raises(ConfigError, match="--peer-secret is required") as info:
        load(CLUSTER, {})
    assert "--local-only true" in str(info.value)
    with pytest.raises(ConfigError, match=r"at least 16 characters \(got 5\)"):
        load({**CLUSTER, "peer_secret": "short"}, {})
    loaded = load(CLUSTER, {"PEER_SECRET": "s" * 16})
    assert (loaded.local_only, loaded.peer_secret) == (False, "s" * 16)
    with pytest.raises(ConfigError, match="drop --local-only"):
        load({**REQUIRED, "peers": "10.0.0.2:9100"}, {})


def test_cluster_settings() -> None:
    secret = {**CLUSTER, "peer_secret": "0123456789abcdef"}
    loaded = load(
        {**secret, "peers": "10.0.0.2:9100, [fd00::3]:9100", "peer_listen": "0.0.0.0:9200"}, {}
    )
    assert loaded.peers == (NodeAddress("10.0.0.2", 9100), NodeAddress("fd00::3", 9100))
    assert loaded.peer_listen == ("0.0.0.0", 9200)
    assert loaded.peer_address == NodeAddress("127.0.0.1", 9200)  # until the service resolves it
    assert loaded.peer_max_datagram == 1472
    loaded = load({**secret, "peers_dns": "nodes.gateway.local:9100"}, {})
    assert loaded.peers_dns == ("nodes.gateway.local", 9100)
    loaded = load({**secret, "peer_listen": "10.0.0.5:9100"}, {})
    assert loaded.peer_address == NodeAddress("10.0.0.5", 9100)
    with pytest.raises(ConfigError, match="not both"):
        load({**secret, "peers": "10.0.0.2:9100", "peers_dns": "n.local:9100"}, {})


def test_aws_transports_need_their_queue_or_topic() -> None:
    base = {"command_token": "t", "local_only": "true"}
    with pytest.raises(ConfigError, match="--events-queue-url is required"):
        load({**base, "origin_transport": "sqs"}, {})
    with pytest.raises(ConfigError, match="--events-topic-arn"):
        load({**base, "origin_transport": "sns", "events_topic_arn": "topic"}, {})
    loaded = load(
        {**base, "origin_transport": "sqs"},
        {
            "EVENTS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo",
            "COMMANDS_WORKERS": "4",
        },
    )
    assert loaded.events_queue_url.endswith("q.fifo")
    assert loaded.commands_workers == 4


def test_load_balancer_target_settings() -> None:
    loaded = settings()
    assert (loaded.target_group_arn, loaded.target_id, loaded.target_health_interval) == ("", "", 5)
    arn = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/wsgw/abc"
    loaded = settings(
        {"TARGET_GROUP_ARN": arn, "TARGET_ID": "10.0.3.4", "TARGET_HEALTH_INTERVAL": "2.5"}
    )
    assert (loaded.target_group_arn, loaded.target_id, loaded.target_health_interval) == (
        arn,
        "10.0.3.4",
        2.5,
    )
    with pytest.raises(ConfigError, match="TARGET_HEALTH_INTERVAL must be between 1 and 60"):
        settings({"TARGET_HEALTH_INTERVAL": "0.5"})
    with pytest.raises(ConfigError, match=r"--target-id must be an IP address \(got 'host'\)"):
        settings(target_group_arn=arn, target_id="host")
    with pytest.raises(ConfigError, match="--target-group-arn must be an arn:"):
        settings(target_group_arn="wsgw")
    with pytest.raises(ConfigError, match="--target-id names this node in --target-group-arn"):
        settings(target_id="10.0.3.4")


def test_graphql_settings() -> None:
    base = {"command_token": "t", "local_only": "true"}
    loaded = load(
        {**base, "origin_transport": "none"},
        {
            "GRAPHQL_ORIGIN_URL": "https://graphql.test/origin",
            "GRAPHQL_INIT_TIMEOUT": "3",
            "GRAPHQL_KA_INTERVAL": "0",
            "GRAPHQL_MAX_OPERATIONS": "20",
        },
    )
    assert loaded.graphql and loaded.graphql_origin_url == "https://graphql.test/origin"
    assert loaded.graphql_init_timeout == 3 and loaded.graphql_ka_interval == 0
    assert loaded.graphql_max_operations == 20 and loaded.graphql_origin_concurrency == 32
    assert load({**base, "origin_transport": "none", "graphql_origin_function": "gql"}, {}).graphql
    assert not settings().graphql
    with pytest.raises(ConfigError, match="--origin-transport none needs a GraphQL origin"):
        load({**base, "origin_transport": "none"}, {})
    with pytest.raises(ConfigError, match="pass --origin-transport none"):
        load({**base, "graphql_origin_function": "gql"}, {})
    with pytest.raises(ConfigError, match="not both"):
        load(
            {
                **base,
                "origin_transport": "none",
                "graphql_origin_function": "gql",
                "graphql_origin_url": "http://x.test/",
            },
            {},
        )
    with pytest.raises(ConfigError, match="--graphql-origin-url must start with http"):
        load({**base, "origin_transport": "none", "graphql_origin_url": "x.test"}, {})
    with pytest.raises(ConfigError, match="--subprotocols must include graphql-transport-ws"):
        settings(graphql_origin_function="gql", subprotocols="chat")
    assert settings(graphql_origin_function="gql", subprotocols="chat,graphql-ws").graphql
    with pytest.raises(ConfigError, match="--graphql-max-operations must be between 1"):
        settings(graphql_max_operations="0")
    with pytest.raises(ConfigError, match="--graphql-init-timeout must be between"):
        settings(graphql_init_timeout="0")


@pytest.mark.parametrize(
    ("name", "token_flag"),
    [("origin_url", "--origin-token"), ("graphql_origin_url", "--graphql-origin-token")],
)
def test_origin_urls_with_credentials_are_refused_without_echoing_them(
    name: str, token_flag: str
) -> None:
    extra = {"origin_transport": "none"} if name == "graphql_origin_url" else {}
    with pytest.raises(ConfigError) as info:
        settings(**{name: "https://admin:hunter2@origin.test/events", **extra})
    message = str(info.value)
    assert "hunter2" not in message and "admin" not in message
    assert "***@origin.test" in message and token_flag in message
    with pytest.raises(ConfigError) as info:
        settings(**{name: "ftp://admin:hunter2@origin.test/", **extra})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("level", ["warning", "Warning", " error ", "DEBUG"])
def test_log_level_in_any_case(level: str) -> None:
    assert settings(log_level=level).log_level == level.strip().upper()
    assert settings({"LOG_LEVEL": level}).log_level == level.strip().upper()
    with pytest.raises(ConfigError, match="--log-level must be one of DEBUG, INFO"):
        settings(log_level="verbose")


def test_event_buffer_keeps_room_for_every_connections_disconnect() -> None:
    with pytest.raises(ConfigError) as info:
        settings(max_connections="60000")  # the default 100,000 events hold 50,000
    assert str(info.value).startswith("--event-buffer-events must be at least twice")
    assert "(120000; got 100000)" in str(info.value)
    assert settings(max_connections="60000", event_buffer_events="120000").max_connections == 60000


def test_event_buffer_for_a_connection_limit() -> None:
    assert event_buffer_for(20_000) == (64 * 1024 * 1024, 100_000)  # the defaults suffice
    assert event_buffer_for(200_000) == (2048 * 200_000, 400_000)
    size, events = event_buffer_for(200_000)
    assert settings(
        max_connections="200000", event_buffer_bytes=str(size), event_buffer_events=str(events)
    )


def test_channel_settings_and_the_rules_they_make() -> None:
    loaded = settings()
    assert loaded.max_subscriptions_per_connection == 100
    assert loaded.max_subscriptions == 1_000_000
    assert loaded.channel_rules == ChannelRules(max_name_length=128, max_user_info_bytes=1024)
    loaded = settings(
        {"MAX_USER_INFO_BYTES": "0"},
        max_channel_name_length="1024",
        max_subscriptions_per_connection="10000",
        max_subscriptions="1",
    )
    assert loaded.channel_rules == ChannelRules(1024, 0)
    assert (loaded.max_subscriptions_per_connection, loaded.max_subscriptions) == (10_000, 1)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_subscriptions_per_connection", "0", "must be between 1 and 10000 (got 0)"),
        ("max_subscriptions_per_connection", "10001", "must be between 1 and 10000"),
        ("max_subscriptions", "0", "must be between 1 and 100000000 (got 0)"),
        ("max_subscriptions", "lots", "must be an integer (got 'lots')"),
        ("max_channel_name_length", "0", "must be between 1 and 1024 (got 0)"),
        ("max_channel_name_length", "1025", "must be between 1 and 1024 (got 1025)"),
        ("max_user_info_bytes", "-1", "must be between 0 and 65536 (got -1)"),
        ("max_user_info_bytes", "65537", "must be between 0 and 65536 (got 65537)"),
    ],
)
def test_bad_channel_settings_name_themselves(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**{name: value})
    assert str(info.value).startswith(flag(name) + " ")
    assert message in str(info.value)
