"""The fault suite's hostile inputs, sent through Python: each raises the right exception with a
message naming the problem, and valid neighbours are still sent and answered."""

from __future__ import annotations

import json
import pathlib

import pytest

import steward
from conftest import NatsServer

BAD_NAMES = {
    "a.b": "'.'",
    "a*": "wildcard",
    "a>": "wildcard",
    "a b": "space",
    "a/b": "'/'",
    "..": "'.'",
    "$SYS": "'$'",
    "skíp": "non-ASCII",
    "x" * 65: "65 characters",
    "": "empty",
    "tab\there": "tab",
}


def echo(text: str, **extra: object) -> dict[str, object]:
    return {"toNode": "ship1", "commandOrEvent": "command", "method": "echo", "data": [text], **extra}


@pytest.fixture
def ready(pair: tuple[steward.Node, steward.Node]) -> steward.Node:
    central, _ = pair
    assert central.send("ship1", "echo", ["up"]).result(timeout=30).stdout == "up"
    return central


def test_json_that_is_not_json(ready: steward.Node) -> None:
    for text, needle in [
        ("not json", "not valid JSON"),
        ('[{"toNode":"ship1","commandOrEvent":"command"', "not valid JSON"),
        ("", "not valid JSON"),
        ("[" * 10_000, "nested"),
        ("42", "expected a JSON array"),
        ('"just a string"', "expected a JSON array"),
    ]:
        with pytest.raises(steward.InvalidMessage, match=needle) as exc:
            ready.send_json(text)
        assert isinstance(exc.value, steward.StewardError)
    with pytest.raises(steward.InvalidMessage, match="UTF-8"):
        ready.send_json(b"[\xff]")
    with pytest.raises(steward.InvalidMessage, match="expected a str"):
        ready.send_json(42)  # type: ignore[arg-type]


def test_bad_elements_are_reported_and_valid_neighbours_sent(ready: steward.Node) -> None:
    batch = [
        echo("first"),
        echo("x", bogus=1),
        {**echo("y"), "toNode": "bad.name"},
        echo("second"),
        {**echo("z"), "fromNode": "central"},
        {**echo("w"), "ackTimeout": -5},
        {**echo("v"), "commandOrEvent": "query"},
        {**echo("u"), "data": ["ok", 7]},
        {**echo("t"), "retries": 1.5},
        {**echo("s"), "ttl": 1e300},
        echo("third"),
    ]
    with pytest.raises(steward.InvalidMessage) as exc:
        ready.send_json(json.dumps(batch))
    err = exc.value
    text = str(err)
    expected = {
        1: "bogus",
        2: "toNode",
        4: "fromNode",
        5: "ackTimeout",
        6: "commandOrEvent",
        7: "data",
        8: "retries",
        9: "ttl",
    }
    assert len(err.errors) == len(expected), err.errors
    for index, field in expected.items():
        assert any(f"index {index}" in e and field in e for e in err.errors), (index, field, err.errors)
        assert f"index {index}" in text
    assert [r.result(timeout=30).stdout for r in err.receipts] == ["first", "second", "third"]


def test_bad_names_everywhere(ready: steward.Node, tmp_path: pathlib.Path, nats: NatsServer) -> None:
    for name, needle in BAD_NAMES.items():
        with pytest.raises(steward.InvalidName, match="field `to`") as exc:
            ready.send(name, "echo")
        assert needle in str(exc.value), (name, str(exc.value))
        with pytest.raises(steward.InvalidName, match="field `method`"):
            ready.send("ship1", name)
        with pytest.raises(steward.InvalidName, match="field `id`"):
            ready.send("ship1", "echo", id=name)
        with pytest.raises(steward.InvalidName, match="node name"):
            steward.Node(name, [nats.url], data_dir=tmp_path)
        with pytest.raises(steward.ConfigError, match="central"):
            steward.Node("ok", [nats.url], data_dir=tmp_path, central=name)
        with pytest.raises(steward.InvalidMessage):
            ready.send_json(json.dumps([{**echo("x"), "toNode": name}]))
        # A valid neighbour goes through after every refusal.
        assert ready.send("ship1", "echo", [name]).result(timeout=30).stdout == name


def test_unknown_method_is_rejected_by_the_receiver(ready: steward.Node) -> None:
    receipt = ready.send("ship1", "noSuchMethod", ["x"])
    with pytest.raises(steward.Rejected, match="does not serve") as exc:
        receipt.result(timeout=30)
    assert not isinstance(exc.value, steward.NotAllowed)
    assert ready.message(receipt.id).state == "rejected"
    assert ready.message(receipt.id).refusal == "notServed"
    with pytest.raises(steward.InvalidMessage, match="reserved"):
        ready.send("ship1", "_result")


def test_negative_huge_and_wrong_timeouts(ready: steward.Node, tmp_path: pathlib.Path) -> None:
    cases = [
        ({"ack_timeout": -1}, "ack_timeout", ">= 0"),
        ({"ack_timeout": float("nan")}, "ack_timeout", ">= 0"),
        ({"ack_timeout": float("inf")}, "ack_timeout", ">= 0"),
        ({"ack_timeout": 1e30}, "ack_timeout", "out of range"),
        ({"ack_timeout": 10**9}, "ackTimeout", "maximum"),
        ({"method_timeout": 0}, "methodTimeout", "more than 0"),
        ({"method_timeout": 10**9}, "methodTimeout", "maximum"),
        ({"ttl": -0.5}, "ttl", ">= 0"),
        ({"ttl": 10**12}, "ttl", "maximum"),
        ({"retry_wait": 10**9}, "retryWait", "maximum"),
        ({"retries": -1}, "retries", "0 to"),
        ({"retries": 2**40}, "retries", "0 to"),
        ({"ack_timeout": "10"}, "ack_timeout", "found a str"),
        ({"ack_timeout": True}, "ack_timeout", "bool"),
        ({"retries": "3"}, "retries", "whole number"),
        ({"retries": 1.5}, "retries", "whole number"),
    ]
    for options, field, needle in cases:
        with pytest.raises(steward.InvalidMessage) as exc:
            ready.send("ship1", "echo", ["x"], **options)  # type: ignore[arg-type]
        assert field in str(exc.value) and needle in str(exc.value), (options, str(exc.value))
    receipt = ready.send("ship1", "echo", ["ok"])
    with pytest.raises(ValueError, match="timeout"):
        receipt.result(timeout=-1)
    assert receipt.result(timeout=30).stdout == "ok"
    for options, needle in [
        ({"ack_timeout": -1}, "ack_timeout"),
        ({"retries": -2}, "retries"),
        ({"window": 0}, "window"),
        ({"hello_interval": "often"}, "hello_interval"),
        ({"allow": [("a.b", "echo")]}, "allow[0]"),
        ({"allow": ["ship2"]}, "allow[0]"),
        ({"brokers": 4222}, "brokers"),
        ({"brokers": []}, "brokers"),
        ({"data_dir": 3.5}, "data_dir"),
    ]:
        with pytest.raises(steward.ConfigError, match=needle.replace("[", r"\[")):
            steward.Node("x", **{"data_dir": tmp_path, **options})  # type: ignore[arg-type]


def test_shell_metacharacters_are_passed_literally(ready: steward.Node) -> None:
    hostile = "$(id); `id` | rm -rf / && echo $HOME > /tmp/steward-pwned * ?[a] ~ 'q' \"dq\" \\ \n end"
    r = ready.send("ship1", "shellCommand", ["printf", "%s", hostile]).result(timeout=30)
    assert r.exit_code == 0 and r.stdout == hostile
    assert not pathlib.Path("/tmp/steward-pwned").exists()
    echoed = ready.send("ship1", "echo", [hostile, "*"]).result(timeout=30)
    assert echoed.stdout == hostile + " *"


def test_wrong_types(ready: steward.Node) -> None:
    cases = [
        ({"to": 5, "method": "echo"}, "to", "found an int"),
        ({"to": None, "method": "echo"}, "to", "NoneType"),
        ({"to": [], "method": "echo"}, "to", "at least one"),
        ({"to": ["ship1", 2], "method": "echo"}, "to[1]", "int"),
        ({"to": "ship1", "method": 3}, "method", "int"),
        ({"to": "ship1", "method": "echo", "data": "ls -l"}, "data", "wrap it in a list"),
        ({"to": "ship1", "method": "echo", "data": [1]}, "data[0]", "int"),
        ({"to": "ship1", "method": "echo", "data": {"a": "b"}}, "data", "found a dict"),
        ({"to": "ship1", "method": "echo", "data": b"ls"}, "data", "found a bytes"),
        ({"to": "ship1", "method": "echo", "data": 7}, "data", "int"),
        ({"to": "ship1", "method": "echo", "kind": "query"}, "kind", "\"command\" or \"event\""),
        ({"to": "ship1", "method": "echo", "kind": 1}, "kind", "int"),
        ({"to": "ship1", "method": "echo", "id": 5}, "id", "int"),
        ({"to": ["ship1", "ship2"], "method": "echo", "id": "one"}, "id", "several"),
    ]
    for kwargs, field, needle in cases:
        with pytest.raises(steward.InvalidMessage) as exc:
            ready.send(**kwargs)  # type: ignore[arg-type]
        assert field in str(exc.value) and needle in str(exc.value), (kwargs, str(exc.value))
    with pytest.raises(TypeError, match="callable"):
        ready.on_result("not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ready.send("ship1")  # type: ignore[call-arg]
    with pytest.raises(steward.ConfigError, match="name"):
        steward.Node(5)  # type: ignore[arg-type]
    assert ready.send("ship1", "echo", ("tuple", "ok")).result(timeout=30).stdout == "tuple ok"
