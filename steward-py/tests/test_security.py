"""Signatures and least privilege through Python: a ship that requires signed messages, pins
central's key and lets central run one argv prefix only; nothing else runs there."""

from __future__ import annotations

import pathlib
from typing import Callable

import pytest

import steward


def test_signed_messages_and_argv_rules(make_node: Callable[..., steward.Node], tmp_path: pathlib.Path) -> None:
    central = make_node("central").start()
    key = central.public_key
    assert key is not None and len(key) == 44
    witness = tmp_path / "ran.txt"
    ship = make_node(
        "ship1",
        signatures="required",
        central_key=key,
        default_access=False,
        allow=[
            ("central", "shellCommand", {"argv_prefix": ["sh", "-c", f"echo allowed >> {witness}"]}),
            ("central", "echo", {"argv": ["exactly this"]}),
            ("rogue", "*"),
        ],
    ).start()
    assert ship.public_key is not None and ship.public_key != key
    assert ship.trust_version == 0

    ok = central.send("ship1", "shellCommand", ["sh", "-c", f"echo allowed >> {witness}", "extra"])
    assert ok.result(timeout=30).exit_code == 0
    assert central.send("ship1", "echo", ["exactly this"]).result(timeout=30).stdout == "exactly this"

    for method, data, needle in [
        ("shellCommand", ["sh", "-c", f"echo denied >> {witness}"], "only with other arguments"),
        ("echo", ["exactly this", "and more"], "only with other arguments"),
        ("textLogging", ["x"], "may not call textLogging"),
    ]:
        with pytest.raises(steward.NotAllowed) as e:
            central.send("ship1", method, data, kind="event" if method == "textLogging" else "command").result(
                timeout=30
            )
        assert needle in str(e.value)

    # A node whose key ship1 does not trust: refused although its access rule allows it.
    rogue = make_node("rogue").start()
    with pytest.raises(steward.Rejected) as e:
        rogue.send("ship1", "echo", ["hi"]).result(timeout=30)
    assert "does not trust for rogue" in str(e.value)
    assert witness.read_text().splitlines() == ["allowed"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"signatures": "maybe"}, "signatures"),
        ({"central_key": "not a key"}, "central_key"),
        ({"trusted_keys": ["ship9"]}, "trusted_keys"),
        ({"trusted_keys": {"ship9": "AAAA"}}, "trusted_keys"),
        ({"trusted_keys": {"bad name": "AAAA"}}, "trusted_keys"),
        ({"allow": [("central", "shellCommand", {"argv": ["a"], "argv_prefix": ["b"]})]}, "allow[0]"),
        ({"allow": [("central", "shellCommand", {"args": ["a"]})]}, "allow[0]"),
        ({"allow": [("central", "shellCommand", ["a"])]}, "allow[0]"),
        ({"allow": [("central", "shellCommand", {"argv": "uptime"})]}, "allow[0].argv"),
    ],
)
def test_bad_security_options_are_refused(tmp_path: pathlib.Path, options: dict[str, object], needle: str) -> None:
    with pytest.raises(steward.ConfigError) as e:
        steward.Node("n", data_dir=tmp_path, **options)  # type: ignore[arg-type]
    assert needle in str(e.value)


def test_central_manages_keys_from_python(make_node: Callable[..., steward.Node]) -> None:
    """Central lists, approves and revokes keys from Python: a pending node is refused by a
    strict ship, approved it runs, revoked it is refused again; misuse raises with the reason."""
    from conftest import wait_until

    central = make_node("central").start()
    ship = make_node("ship1", signatures="required", central_key=central.public_key, allow=[("ship2", "echo")]).start()
    ship2 = make_node("ship2", central_key=central.public_key).start()

    def state_of(node: str) -> str | None:
        return next((k["state"] for k in central.keys() if k["node"] == node), None)

    # Bundles are queued only to approved nodes (junk names get none), so ship1 is enrolled
    # first; a node still pending gets newer bundles only in the answer to its registration.
    wait_until(lambda: state_of("ship1") == "pending", what="ship1's key pending on central")
    version = central.approve_key("ship1", ship.public_key)
    wait_until(lambda: ship.trust_version >= version, what="ship1 applying its own approval")
    wait_until(lambda: state_of("ship2") == "pending", what="ship2's key pending on central")
    listed = next(k for k in central.keys() if k["node"] == "ship2")
    assert listed["key"] == ship2.public_key and listed["since_ms"] > 0
    with pytest.raises(steward.Rejected) as e:
        ship2.send("ship1", "echo", ["pending"]).result(timeout=30)
    assert "does not trust for ship2" in str(e.value)

    version = central.approve_key("ship2", ship2.public_key)
    assert state_of("ship2") == "approved"
    wait_until(lambda: ship.trust_version >= version, what="ship1 applying the approval")
    assert ship2.send("ship1", "echo", ["approved"]).result(timeout=30).stdout == "approved"

    version = central.revoke_key("ship2")
    assert state_of("ship2") == "revoked"
    wait_until(lambda: ship.trust_version >= version, what="ship1 applying the revocation")
    with pytest.raises(steward.Rejected) as e:
        ship2.send("ship1", "echo", ["revoked"]).result(timeout=30)
    assert "revoked" in str(e.value)

    with pytest.raises(steward.ConfigError) as e:
        ship.keys()
    assert "central" in str(e.value)
    with pytest.raises(steward.ConfigError) as e:
        central.approve_key("ship2", "not a key")
    with pytest.raises(steward.StewardError) as e:
        central.approve_key("nobody")
    assert "nobody" in str(e.value)
