"""Log lines: whatever a client puts in a field (a close reason, a header, a path), each record
stays one line whose fields cannot be forged, in both formats."""

from __future__ import annotations

import json
import logging

from runtime.logs import JsonFormatter, LogThrottle, TextFormatter

FORGERY = "bye\n23:59:59.000 ERROR   node compromised  connectionId=\x1b[2Jx\u2028y"


def record(**fields: object) -> logging.LogRecord:
    entry = logging.LogRecord("runtime.node", logging.INFO, "", 0, "disconnected", None, None)
    entry.__dict__.update(fields)
    return entry


def test_text_lines_escape_and_quote_what_clients_chose() -> None:
    line = TextFormatter().format(record(reason=FORGERY, code=1000, path='/a b"c\\d', empty=""))
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith(
        ' reason="bye\\n23:59:59.000 ERROR   node compromised  connectionId=\\x1b[2Jx\\u2028y"'
        ' code=1000 path="/a b\\"c\\\\d" empty=""'
    )


def test_text_message_escaped_too() -> None:
    entry = logging.LogRecord("x", logging.INFO, "", 0, "got %s", ("a\nb",), None)
    assert TextFormatter().format(entry).endswith("got a\\nb")


def test_plain_values_stay_unquoted() -> None:
    line = TextFormatter().format(record(connectionId="AQVsb2NhbA-_", code=1001))
    assert line.endswith("disconnected  connectionId=AQVsb2NhbA-_ code=1001")


def test_json_lines_hold_the_value_exactly() -> None:
    line = JsonFormatter().format(record(reason=FORGERY))
    assert "\n" not in line
    assert json.loads(line)["reason"] == FORGERY


def test_throttle_lets_one_line_a_period_through_and_counts_the_rest() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.allow("refused", 0.0) == 0
    assert [throttle.allow("refused", t) for t in (1.0, 5.0, 9.9)] == [None, None, None]
    assert throttle.allow("other", 2.0) == 0  # kinds are throttled apart
    assert throttle.allow("refused", 10.0) == 3
    assert throttle.allow("refused", 10.5) is None
