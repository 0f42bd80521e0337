"""Closed by default: nodes left at the default `signatures` ("required") talk only once enrolled,
which a join token from central does in one step (`Node(..., join=central.join_token())`)."""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Callable

import pytest

import steward
from conftest import key_state, wait_until


def test_a_node_joined_with_a_token_runs_what_central_sends(
    make_node: Callable[..., steward.Node], tmp_path: pathlib.Path
) -> None:
    central = make_node("central", signatures=None).start()
    token = central.join_token()
    assert token.startswith("sjt1.central.")
    ship = make_node("ship1", signatures=None, join=token).start()
    wait_until(lambda: key_state(central, "ship1") == "approved", timeout=30, what="ship1 approved by its token")
    [listed] = central.join_tokens()
    assert listed["approved"] == 1

    done = central.send("ship1", "shellCommand", ["sh", "-c", "echo joined"]).result(timeout=30)
    assert (done.status, done.exit_code, done.stdout) == ("ok", 0, "joined\n")
    assert central.send("ship1", "echo", ["hi"]).result(timeout=30).stdout == "hi"
    assert (tmp_path / "ship1" / "central.pub").read_text().strip() == central.public_key

    # Central's key stays pinned: the next start needs no token.
    ship.stop()
    make_node("ship1", signatures=None).start()
    assert central.send("ship1", "echo", ["again"]).result(timeout=30).stdout == "again"


def test_a_default_node_without_a_token_runs_nothing_from_central(
    make_node: Callable[..., steward.Node], tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ship1 refuses central's command (it trusts no key of central); its refusal is signed with
    a key central never approved, so central ignores it too and gives up after its retries."""
    caplog.set_level(logging.WARNING, logger="steward")
    central = make_node("central", signatures=None).start()
    make_node("ship1", signatures=None).start()
    witness = tmp_path / "ran"
    receipt = central.send("ship1", "shellCommand", ["touch", str(witness)], retries=2)
    with pytest.raises(steward.DeliveryFailed) as e:
        receipt.result(timeout=30)
    assert "gave up after 3 attempts" in str(e.value)
    assert "signed with a key that central does not trust for ship1" in str(e.value)
    assert receipt.status().state == "failed"
    assert not witness.exists()

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "ship1 refused a message from central" in r.getMessage()]

    wait_until(lambda: len(refusals()) > 0, what="ship1 logging its refusal")
    assert all("has not pinned central's key" in m for m in refusals()), refusals()
    assert central.keys() == []  # a node that knows no central key does not register


@pytest.mark.parametrize("spoil", ["revoked", "expired"])
def test_a_revoked_or_expired_token_leaves_the_key_pending(
    make_node: Callable[..., steward.Node], spoil: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="steward")
    central = make_node("central", signatures=None).start()
    if spoil == "revoked":
        token = central.join_token()
        [listed] = central.join_tokens()
        central.revoke_join_token(listed["id"])
        why = "is unknown on central"
    else:
        token = central.join_token(valid_for=0.05)
        time.sleep(0.2)
        why = "expired"
    assert central.join_tokens() == []
    ship = make_node("ship1", signatures=None, join=token).start()
    wait_until(lambda: key_state(central, "ship1") == "pending", timeout=30, what="ship1's key pending")
    [key] = [k for k in central.keys() if k["node"] == "ship1"]
    assert (key["key"], key["state"]) == (ship.public_key, "pending")
    wait_until(
        lambda: any("the key stays pending" in r.getMessage() and why in r.getMessage() for r in caplog.records),
        what="central logging why the key stays pending",
    )
    # The operator can still approve it by hand.
    central.approve_key("ship1", ship.public_key)
    assert key_state(central, "ship1") == "approved"


def test_auto_approve_is_a_setting_of_central(make_node: Callable[..., steward.Node], tmp_path: pathlib.Path) -> None:
    with pytest.raises(steward.ConfigError, match="auto_approve"):
        steward.Node("ship1", data_dir=tmp_path / "s", auto_approve=True)
    with pytest.raises(steward.ConfigError, match="auto_approve"):
        steward.Node("ship1", data_dir=tmp_path / "s", central="hq", auto_approve=True)
    assert steward.Node("hq", data_dir=tmp_path / "hq", central="hq", auto_approve=True).name == "hq"
    # On central it approves a node that pinned central's key, without a token.
    central = make_node("central", signatures=None, auto_approve=True).start()
    make_node("ship1", signatures=None, central_key=central.public_key).start()
    wait_until(lambda: key_state(central, "ship1") == "approved", timeout=30, what="ship1 auto-approved")
    assert central.send("ship1", "echo", ["auto"]).result(timeout=30).stdout == "auto"


def test_join_tokens_list_and_revoke(make_node: Callable[..., steward.Node]) -> None:
    central = make_node("central", signatures=None).start()
    assert central.join_tokens() == []
    before = int(time.time() * 1000)
    day = central.join_token()
    forever = central.join_token(valid_for=None)
    hour = central.join_token(3600)
    listed = central.join_tokens()
    assert len(listed) == 3 and len({t["id"] for t in listed}) == 3
    assert all(set(t) == {"id", "created_ms", "expires_ms", "approved"} for t in listed)
    assert all(t["approved"] == 0 and t["created_ms"] >= before for t in listed)
    lifetimes = sorted(
        (t["expires_ms"] - t["created_ms"] if t["expires_ms"] is not None else -1) for t in listed
    )
    assert lifetimes == [-1, 3_600_000, 86_400_000]
    assert len({day, forever, hour}) == 3

    first = listed[0]["id"]
    assert central.revoke_join_token(first) is None
    assert first not in [t["id"] for t in central.join_tokens()] and len(central.join_tokens()) == 2
    with pytest.raises(steward.NotFound, match=first):
        central.revoke_join_token(first)
    with pytest.raises(steward.NotFound):
        central.revoke_join_token("00000000")


def test_join_token_misuse_is_refused_with_the_reason(
    make_node: Callable[..., steward.Node], tmp_path: pathlib.Path
) -> None:
    for bad in ["hello", "", "sjt9.central.a.b"]:
        with pytest.raises(steward.ConfigError, match="option `join`: not a join token"):
            steward.Node("ship1", data_dir=tmp_path / "s", join=bad)
    with pytest.raises(steward.ConfigError, match="option `join`"):
        steward.Node("ship1", data_dir=tmp_path / "s", join=42)  # type: ignore[arg-type]

    central = make_node("central", signatures=None).start()
    token = central.join_token()
    with pytest.raises(steward.ConfigError, match="the token is for central \"central\", but central=\"hq\""):
        steward.Node("ship1", data_dir=tmp_path / "s", central="hq", join=token)
    assert steward.Node("ship1", data_dir=tmp_path / "s", central="central", join=token).name == "ship1"
    # Central itself cannot join with its own token (the core refuses at start).
    with pytest.raises(steward.ConfigError, match="central node of this join token"):
        make_node("central", data_dir=tmp_path / "c2", signatures=None, join=token).start()
    for bad_validity in [0, -1, "1h", True]:
        with pytest.raises(ValueError, match="valid_for"):
            central.join_token(bad_validity)  # type: ignore[arg-type]
    ship = make_node("ship1", signatures=None, join=token).start()
    with pytest.raises(steward.ConfigError, match="central"):
        ship.join_token()
    with pytest.raises(steward.ConfigError, match="central"):
        ship.join_tokens()


def test_the_node_docs_say_it_is_closed_by_default() -> None:
    doc = steward.Node.__doc__ or ""
    assert '`signatures` is "required" unless given' in doc
    assert '"off"' in doc and "warns about them at start" in doc
    assert "`join`" in doc and "`auto_approve=True`" in doc
