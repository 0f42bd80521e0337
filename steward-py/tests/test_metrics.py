"""Prometheus metrics from Python: `metrics_address` serves them over HTTP, `metrics_text()`
returns the same text, after a round trip and a rejection between two nodes."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

import steward


def scrape(address: str) -> tuple[str, str]:
    """GET http://<address>/metrics: (content type, body)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=20) as reply:
        assert reply.status == 200
        return reply.headers["Content-Type"], reply.read().decode()


def sample(text: str, series: str) -> float | None:
    """The value of the exact series `name{labels}` in Prometheus text, if present."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


def test_metrics_endpoint_and_text_count_a_round_trip_and_a_rejection(make_node) -> None:
    ship = make_node("ship1", metrics_address="127.0.0.1:0").start()
    central = make_node("central", metrics_address="127.0.0.1:0").start()
    address = central.metrics_address
    assert address is not None and address.startswith("127.0.0.1:")
    assert not address.endswith(":0")

    for i in range(2):
        assert central.send("ship1", "echo", [f"hi {i}"]).result(timeout=30).stdout == f"hi {i}"
    # ship1 serves no such method: rejected (the receiver counts it as "_unserved", so senders
    # cannot grow its label set at will).
    refused = central.send("ship1", "noSuchMethod", ["x"])
    with pytest.raises(steward.Rejected):
        refused.result(timeout=30)

    content_type, text = scrape(address)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    echo = '{destination="ship1",method="echo"}'
    unserved = '{destination="ship1",method="noSuchMethod"}'
    assert sample(text, f"steward_messages_accepted_total{echo}") == 2
    assert sample(text, f"steward_messages_sent_total{echo}") == 2
    assert sample(text, f"steward_messages_completed_total{echo}") == 2
    assert sample(text, f"steward_messages_rejected_total{unserved}") == 1
    assert sample(text, f"steward_messages_in_flight{echo}") == 0
    assert sample(text, 'steward_outbox_depth{destination="ship1"}') == 0
    assert sample(text, 'steward_delivery_latency_seconds_count{method="echo"}') == 2
    assert sample(text, 'steward_end_to_end_latency_seconds_count{method="echo"}') == 2
    assert sample(text, 'steward_node_last_seen_seconds{node="ship1"}') is not None

    # metrics_text() is the same text, without HTTP (and without a metrics address).
    embedded = central.metrics_text()
    assert sample(embedded, f"steward_messages_completed_total{echo}") == 2
    ship_text = ship.metrics_text()
    assert sample(ship_text, 'steward_incoming_executed_total{sender="central",method="echo",status="ok"}') == 2
    assert (
        sample(
            ship_text,
            'steward_incoming_refused_total{sender="central",method="_unserved",reason="rejected"}',
        )
        == 1
    )
    assert sample(ship_text, 'steward_execution_duration_seconds_count{method="echo"}') == 2

    # The endpoint stops with the node.
    host, port = address.rsplit(":", 1)
    central.stop()
    assert central.metrics_address is None
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
    with pytest.raises(steward.Stopped):
        central.metrics_text()


def test_metrics_address_is_checked(make_node) -> None:
    with pytest.raises(steward.ConfigError, match="metrics_address"):
        make_node("bad", metrics_address="localhost")
    first = make_node("first", metrics_address="127.0.0.1:0").start()
    taken = make_node("second", metrics_address=first.metrics_address)
    with pytest.raises(steward.ConfigError, match="cannot serve metrics on"):
        taken.start()
    # Without a metrics address nothing is served, but the text is there.
    quiet = make_node("quiet").start()
    assert quiet.metrics_address is None
    assert "# TYPE steward_broker_connected gauge" in quiet.metrics_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{first.metrics_address}/nothing", timeout=5)
