"""The steward exception classes (re-exported by `steward` and `steward._steward`).

They are plain Python classes so that some can also derive from a built-in exception
(`TimedOut` is a `TimeoutError`, `InvalidMessage` a `ValueError`) and so that every
`InvalidMessage` carries `receipts` and `errors`. The native module raises them by the error
kind of the Rust core (`steward-py/src/errors.rs`).
"""

from __future__ import annotations

from typing import Any, Iterable


class StewardError(Exception):
    """Root of every steward error. The `kind` attribute holds the stable error code (e.g. "rejected")."""

    kind: str = "error"


class InvalidMessage(StewardError, ValueError):
    """A message (JSON or send() arguments) is malformed or has a bad field; the text names the
    field. Also a `ValueError`.

    `receipts` holds the receipts of the messages that were sent anyway (from `send_json`, the
    valid elements of a batch that also had invalid ones) and `errors` one reason per refused
    element; both are empty lists when nothing was sent.
    """

    kind = "invalid_message"

    def __init__(self, *args: object, receipts: Iterable[Any] = (), errors: Iterable[str] = ()) -> None:
        """The message text, and optionally the receipts that were sent and the reasons."""
        super().__init__(*args)
        self.receipts: list[Any] = list(receipts)
        self.errors: list[str] = list(errors)


class InvalidName(InvalidMessage):
    """A node, method or message id breaks the naming rules (1-64 characters of A-Z a-z 0-9 _ -).
    A subclass of `InvalidMessage`: `send()` raises it for a bad `to`, `method` or `id`."""

    kind = "invalid_name"


class ConfigError(StewardError):
    """The node configuration is unusable (bad option, missing nats-server, ...)."""

    kind = "config"


class StorageError(StewardError):
    """The message store in the data directory failed; check disk space and permissions."""

    kind = "storage"


class DataDirInUse(StewardError):
    """Another steward node holds the data directory; stop it or choose another data_dir."""

    kind = "data_dir_in_use"


class BrokerUnavailable(StewardError):
    """The NATS broker could not be reached or refused the node."""

    kind = "broker_unavailable"


class BrokerAuthError(BrokerUnavailable):
    """The NATS broker answered but refused the node: credentials not accepted, an untrusted
    certificate, or TLS refused. The message says what to fix."""

    kind = "broker_auth"


class Stopped(StewardError):
    """The node is stopped (or not started); create and start a new Node."""

    kind = "stopped"


class NotFound(StewardError):
    """No message with that id is known to this node."""

    kind = "not_found"


class TimedOut(StewardError, TimeoutError):
    """Waiting took longer than allowed; the message may still complete later. Also a
    `TimeoutError`."""

    kind = "timed_out"


class Expired(StewardError):
    """The message's time to live ran out before it was delivered or run."""

    kind = "expired"


class Rejected(StewardError):
    """The receiving node refused the message (unknown method, wrong kind, not allowed, ...)."""

    kind = "rejected"


class NotAllowed(Rejected):
    """The receiving node refused the message because its access list does not allow the sender
    to call that method."""

    kind = "rejected"


class DeliveryFailed(StewardError):
    """Delivery was given up after the configured retries without an ACK."""

    kind = "delivery_failed"


class Cancelled(StewardError):
    """The message was cancelled before delivery."""

    kind = "cancelled"


class NoResult(StewardError):
    """The message was sent without ACK (ack_timeout=0), so no result will come."""

    kind = "no_result"


class IoError(StewardError):
    """A file could not be read or written."""

    kind = "io"


ALL = [
    StewardError,
    InvalidMessage,
    InvalidName,
    ConfigError,
    StorageError,
    DataDirInUse,
    BrokerUnavailable,
    BrokerAuthError,
    Stopped,
    NotFound,
    TimedOut,
    Expired,
    Rejected,
    NotAllowed,
    DeliveryFailed,
    Cancelled,
    NoResult,
    IoError,
]

for _cls in ALL:
    _cls.__module__ = "steward"
del _cls
