"""The exception classes: hierarchy, built-in bases, the exception each bad argument raises, and
the attributes every instance has."""

from __future__ import annotations

import ast
import pathlib
import pickle

import pytest

import steward
from test_stubs import STUB

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_hierarchy_and_builtin_bases() -> None:
    assert issubclass(steward.InvalidName, steward.InvalidMessage)
    assert issubclass(steward.InvalidMessage, steward.StewardError)
    assert issubclass(steward.InvalidMessage, ValueError)
    assert issubclass(steward.TimedOut, steward.StewardError)
    assert issubclass(steward.TimedOut, TimeoutError)
    assert issubclass(steward.NotAllowed, steward.Rejected)
    assert issubclass(steward.BrokerAuthError, steward.BrokerUnavailable)
    classes = {
        name: obj
        for name in steward.__all__
        if isinstance(obj := getattr(steward, name), type) and issubclass(obj, BaseException)
    }
    assert len(classes) == 18
    for name, cls in classes.items():
        assert issubclass(cls, steward.StewardError), name
        assert cls.__module__ == "steward", name
        assert cls is getattr(steward._steward, name), name
    kinds = {name: cls.kind for name, cls in classes.items()}
    assert kinds["InvalidName"] == "invalid_name" and kinds["InvalidMessage"] == "invalid_message"
    assert kinds["TimedOut"] == "timed_out" and kinds["StewardError"] == "error"
    assert kinds["NotAllowed"] == kinds["Rejected"] == "rejected"


def test_every_invalid_message_has_receipts_and_errors(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    raised = []
    for call in [
        lambda: central.send_json("not json"),
        lambda: central.send_json(b"[\xff]"),
        lambda: central.send("ship1", "echo", ttl=-1),
        lambda: central.send("bad.name", "echo"),
    ]:
        with pytest.raises(steward.InvalidMessage) as exc:
            call()
        raised.append(exc.value)
    for e in raised:
        assert e.receipts == [] and e.errors == [], repr(e)
        assert isinstance(e, ValueError)
    made = steward.InvalidMessage("by hand")
    assert (made.receipts, made.errors, str(made)) == ([], [], "by hand")
    copy = pickle.loads(pickle.dumps(raised[0]))
    assert type(copy) is steward.InvalidMessage and copy.receipts == [] and str(copy) == str(raised[0])


def test_bad_names_in_send_raise_invalid_name(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    cases = [
        ({"to": "bad.name"}, "field `to`", "'.'"),
        ({"to": ["ship1", "bad name"]}, "field `to[1]`", "space"),
        ({"to": ""}, "field `to`", "empty"),
        ({"method": "bad*method"}, "field `method`", "wildcard"),
        ({"method": "m" * 65}, "field `method`", "at most 64"),
        ({"id": "bad/id"}, "field `id`", "'/'"),
    ]
    for override, field, needle in cases:
        args = {"to": "ship1", "method": "echo", **override}
        with pytest.raises(steward.InvalidName) as exc:
            central.send(**args)  # type: ignore[call-overload]
        text = str(exc.value)
        assert field in text and needle in text, (override, text)
        assert exc.value.kind == "invalid_name"
        assert isinstance(exc.value, steward.InvalidMessage) and isinstance(exc.value, ValueError)
    # Other bad arguments stay plain InvalidMessage.
    for options in [{"ttl": -1}, {"data": [1]}, {"kind": "query"}]:
        with pytest.raises(steward.InvalidMessage) as exc:
            central.send("ship1", "echo", **options)  # type: ignore[arg-type]
        assert type(exc.value) is steward.InvalidMessage, options
    # Nothing was sent by the refused calls, and a good one still goes through.
    assert central.recent_messages() == []
    assert central.send("ship1", "echo", ["ok"]).result(timeout=30).stdout == "ok"


def test_timed_out_is_a_timeout_error(make_node) -> None:
    central = make_node("central").start()
    receipt = central.send("nobody", "echo")
    with pytest.raises(TimeoutError) as exc:
        receipt.result(timeout=0.05)
    assert isinstance(exc.value, steward.TimedOut) and exc.value.kind == "timed_out"
    assert "still pending" in str(exc.value)
    with pytest.raises(TimeoutError):
        receipt.wait(timeout=0.05)


def test_cancel_of_an_unknown_id_raises_not_found_and_says_so(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    with pytest.raises(steward.NotFound, match="no-such-id"):
        central.cancel("no-such-id")
    assert "NotFound" in (steward.Node.cancel.__doc__ or "")
    [stub] = [
        f
        for c in ast.parse(STUB.read_text()).body
        if isinstance(c, ast.ClassDef) and c.name == "Node"
        for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name == "cancel"
    ]
    assert "NotFound" in (ast.get_docstring(stub) or "")
    section = README.read_text().split("### Python", 1)[1].split("\n## ", 1)[0]
    assert any("cancel" in line and "NotFound" in line for line in section.splitlines()), section
