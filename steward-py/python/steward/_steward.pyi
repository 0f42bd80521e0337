"""Type stubs of the native module `steward._steward` (re-exported by `steward`)."""

import os
from datetime import timedelta
from types import TracebackType
from typing import Any, Awaitable, Callable, Generator, Iterable, Literal, Mapping, Optional, Sequence, Tuple, TypeVar, Union, overload

__version__: str
INSTALL_HINT: str

Seconds = Union[int, float, timedelta]
Kind = Literal["command", "event"]
_F = TypeVar("_F", bound=Callable[..., Any])
MethodReturn = Union[str, bytes, None, "Result", Any]

class StewardError(Exception):
    """Root of every steward error; `kind` holds the stable error code (e.g. "rejected")."""

    kind: str

class InvalidMessage(StewardError, ValueError):
    """A message is malformed or has a bad field (also a `ValueError`). `receipts` holds the
    receipts of the messages sent anyway (`send_json`: the valid elements of a batch) and
    `errors` one reason per refused element; both are empty lists when nothing was sent."""

    receipts: list[Receipt]
    errors: list[str]
    def __init__(self, *args: object, receipts: Iterable[Receipt] = (), errors: Iterable[str] = ()) -> None:
        """The message text, and optionally the receipts that were sent and the reasons."""

class InvalidName(InvalidMessage):
    """A node, method or message id breaks the naming rules; `send()` raises it for a bad `to`,
    `method` or `id`."""

class ConfigError(StewardError):
    """The node configuration is unusable."""

class StorageError(StewardError):
    """The message store in the data directory failed."""

class DataDirInUse(StewardError):
    """Another steward node holds the data directory."""

class BrokerUnavailable(StewardError):
    """The NATS broker could not be reached or refused the node."""

class BrokerAuthError(BrokerUnavailable):
    """The NATS broker answered but refused the node: credentials not accepted, an untrusted
    certificate, or TLS refused. The message says what to fix."""

class Stopped(StewardError):
    """The node is stopped."""

class NotFound(StewardError):
    """No message with that id is known to this node."""

class TimedOut(StewardError, TimeoutError):
    """Waiting took longer than allowed (also a `TimeoutError`)."""

class Expired(StewardError):
    """The message's time to live ran out."""

class Rejected(StewardError):
    """The receiving node refused the message."""

class NotAllowed(Rejected):
    """The receiver's access list does not allow the sender to call that method."""

class DeliveryFailed(StewardError):
    """Delivery was given up after the configured retries."""

class Cancelled(StewardError):
    """The message was cancelled before delivery."""

class NoResult(StewardError):
    """The message was sent without ACK, so no result will come."""

class IoError(StewardError):
    """A file could not be read or written."""

class Result:
    """The outcome of one method run on the receiving node."""

    def __init__(
        self,
        stdout: str = "",
        stderr: str = "",
        *,
        status: Literal["ok", "failed", "unknown"] = "ok",
        exit_code: Optional[int] = None,
        error: Optional[str] = None,
        truncated: bool = False,
    ) -> None:
        """A result to return from a Python method."""
    @staticmethod
    def failure(reason: str, stdout: str = "", stderr: str = "", exit_code: Optional[int] = None) -> Result:
        """A failed result with `reason` (and optional output)."""
    @property
    def stdout(self) -> str:
        """Captured standard output, or the method's reply text."""
    @property
    def stderr(self) -> str:
        """Captured standard error."""
    @property
    def exit_code(self) -> Optional[int]:
        """The process exit code, when a process ran and exited normally."""
    @property
    def status(self) -> Literal["ok", "failed", "unknown"]:
        """How the run ended."""
    @property
    def ok(self) -> bool:
        """True when `status` is "ok"."""
    @property
    def duration(self) -> float:
        """Run time in seconds."""
    @property
    def node(self) -> str:
        """The node that ran the method."""
    @property
    def truncated(self) -> bool:
        """True when output was cut at the receiver's capture limit."""
    @property
    def error(self) -> Optional[str]:
        """Why the method failed, when it did."""
    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict."""
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...

class MessageStatus:
    """Where a sent message stands, as the sending node knows it."""

    @property
    def id(self) -> str:
        """The message id."""
    @property
    def to_node(self) -> str:
        """The destination node."""
    @property
    def subject(self) -> str:
        """The subject it travels on."""
    @property
    def state(
        self,
    ) -> Literal["queued", "sent", "received", "completed", "failed", "expired", "rejected", "cancelled"]:
        """The current state."""
    @property
    def is_final(self) -> bool:
        """True once the state never changes again."""
    @property
    def attempts(self) -> int:
        """Send attempts so far."""
    @property
    def result(self) -> Optional[Result]:
        """The result, once completed."""
    @property
    def reason(self) -> Optional[str]:
        """Why it failed, expired or was rejected."""
    @property
    def refusal(self) -> Optional[str]:
        """For a rejected message, why as a code when the receiver said: "notAllowed" (its
        access list), "notServed" (no such method, or the other kind), "untrusted" (the
        signature or key); else None."""
    @property
    def created_ms(self) -> int:
        """When it was accepted (ms since the Unix epoch)."""
    @property
    def updated_ms(self) -> int:
        """When its state last changed (ms since the Unix epoch)."""
    @property
    def message(self) -> dict[str, Any]:
        """The message as sent, in the original JSON format."""
    def to_dict(self) -> dict[str, Any]:
        """The status as a plain dict (camelCase keys)."""

class DestinationStatus:
    """What the sending node knows about one destination node."""

    @property
    def node(self) -> str:
        """The destination node."""
    @property
    def pending(self) -> int:
        """Messages accepted and not yet final."""
    @property
    def completed(self) -> int:
        """Messages completed."""
    @property
    def failed(self) -> int:
        """Messages failed, expired, rejected or cancelled."""
    @property
    def last_ack_ms(self) -> Optional[int]:
        """Last ACK or result from it (ms since the Unix epoch)."""
    @property
    def last_seen_ms(self) -> Optional[int]:
        """Last message of any kind from it (ms since the Unix epoch)."""

class ErrorReport:
    """One failure reported by the node."""

    @property
    def time_ms(self) -> int:
        """When (ms since the Unix epoch)."""
    @property
    def node(self) -> str:
        """The node that reports it."""
    @property
    def message_id(self) -> Optional[str]:
        """The message concerned, if any."""
    @property
    def kind(self) -> Literal["deliveryFailed", "expired", "methodFailed", "rejected", "badInput", "taskFailed", "brokerAuth"]:
        """What failed."""
    @property
    def reason(self) -> str:
        """Why, in words for the operator."""

class Request:
    """One incoming message, handed to a Python method."""

    @property
    def id(self) -> str:
        """The message id (the same on a resend)."""
    @property
    def from_node(self) -> str:
        """The sending node."""
    @property
    def to_node(self) -> str:
        """This node."""
    @property
    def kind(self) -> Kind:
        """"command" or "event"."""
    @property
    def method(self) -> str:
        """The method called."""
    @property
    def data(self) -> list[str]:
        """The arguments."""
    @property
    def method_timeout(self) -> float:
        """How long the method may run, in seconds."""
    @property
    def data_dir(self) -> str:
        """This node's data directory."""

class Receipt:
    """A message accepted by the node; wait for its result with `result()` or `await`."""

    @property
    def id(self) -> str:
        """The message id."""
    @property
    def to_node(self) -> str:
        """The destination node."""
    @property
    def subject(self) -> str:
        """The subject (`<to_node>.<command|event>.<method>`)."""
    def result(self, timeout: Optional[Seconds] = None) -> Result:
        """Blocks until the result is in (Ctrl-C works); raises TimedOut, Rejected, ..."""
    def wait(self, timeout: Optional[Seconds] = None) -> MessageStatus:
        """Blocks until the message reaches a final state."""
    def status(self) -> MessageStatus:
        """The message's current state."""
    def cancel(self) -> bool:
        """Cancels the message if not yet received; False if too late."""
    def __await__(self) -> Generator[Any, None, Result]:
        """`await receipt` gives the `Result` without blocking the event loop."""

class MethodDecorator:
    """What `Node.method(name)` returns: call it with the function to serve."""

    def __call__(self, func: _F) -> _F:
        """Serves the method with `func` and returns `func` unchanged."""

class Node:
    """A steward node: sends messages to other nodes and serves methods for them."""

    def __init__(
        self,
        name: str,
        brokers: Optional[Union[str, Sequence[str]]] = None,
        *,
        data_dir: Optional[Union[str, os.PathLike[str]]] = None,
        central: Optional[str] = None,
        ack_timeout: Optional[Seconds] = None,
        retries: Optional[int] = None,
        retry_wait: Optional[Seconds] = None,
        retry_wait_max: Optional[Seconds] = None,
        method_timeout: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        clock_skew: Optional[Seconds] = None,
        window: Optional[int] = None,
        hello_interval: Optional[Seconds] = None,
        output_limit: Optional[int] = None,
        allow: Optional[
            Sequence[Union[Tuple[str, str], Tuple[str, str, Mapping[str, Sequence[str]]]]]
        ] = None,
        default_access: bool = True,
        signatures: Optional[Literal["required", "off", "unsigned"]] = None,
        central_key: Optional[str] = None,
        trusted_keys: Optional[Mapping[str, str]] = None,
        key_file: Optional[Union[str, os.PathLike[str]]] = None,
        join: Optional[str] = None,
        auto_approve: bool = False,
        watch_inmsg: bool = False,
        builtin_methods: bool = True,
        embedded_broker: Optional[Union[bool, str]] = None,
        broker_user: Optional[str] = None,
        broker_password: Optional[str] = None,
        broker_token: Optional[str] = None,
        broker_nkey_seed: Optional[str] = None,
        broker_nkey_seed_file: Optional[Union[str, os.PathLike[str]]] = None,
        broker_creds: Optional[Union[str, os.PathLike[str]]] = None,
        broker_tls_ca: Optional[Union[str, os.PathLike[str]]] = None,
        broker_tls_cert: Optional[Union[str, os.PathLike[str]]] = None,
        broker_tls_key: Optional[Union[str, os.PathLike[str]]] = None,
        broker_require_tls: bool = False,
        metrics_address: Optional[str] = None,
    ) -> None:
        """Configures a node; nothing runs until `start()`.

        Closed by default: `signatures` is "required" unless given ("off" and "unsigned" are
        warned about at start). `join` is a join token from `central.join_token()`: it names
        central, pins its key and has this node's key approved when it registers.
        `auto_approve=True` (central only, labs) approves every new key without a token."""
    def start(self) -> Node:
        """Starts the node and returns it."""
    def stop(self) -> None:
        """Stops the node; unfinished messages resume at the next start."""
    def __enter__(self) -> Node: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> bool: ...
    @property
    def name(self) -> str:
        """This node's name."""
    @property
    def public_key(self) -> Optional[str]:
        """This node's public key (base64), once started (its key pair is created on first start)."""
    @property
    def trust_version(self) -> int:
        """The version of the newest trust bundle from central this node applied (0: none)."""
    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
    @property
    def connected(self) -> bool:
        """True while connected to a broker."""
    @property
    def metrics_address(self) -> Optional[str]:
        """Where Prometheus metrics are served ("IP:PORT") while running, or None."""
    def metrics_text(self) -> str:
        """Every metric in the Prometheus text format (what `GET /metrics` answers)."""
    @property
    def brokers(self) -> list[str]:
        """The broker URLs in use."""
    @overload
    def send(
        self,
        to: str,
        method: str,
        data: Optional[Sequence[str]] = None,
        *,
        kind: Kind = "command",
        ack_timeout: Optional[Seconds] = None,
        retries: Optional[int] = None,
        retry_wait: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        method_timeout: Optional[Seconds] = None,
        id: Optional[str] = None,
    ) -> Receipt: ...
    @overload
    def send(
        self,
        to: Sequence[str],
        method: str,
        data: Optional[Sequence[str]] = None,
        *,
        kind: Kind = "command",
        ack_timeout: Optional[Seconds] = None,
        retries: Optional[int] = None,
        retry_wait: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        method_timeout: Optional[Seconds] = None,
        id: Optional[str] = None,
    ) -> list[Receipt]: ...
    def send_json(self, text: Union[str, bytes]) -> list[Receipt]:
        """Sends messages in the original JSON format; returns their receipts. Raises
        InvalidMessage (with `receipts` of the sent ones and `errors`) if any element is bad."""
    def on_result(self, callback: Callable[[MessageStatus], Any]) -> Callable[[MessageStatus], Any]:
        """Calls `callback` (a function or an `async def`) for every sent message that reaches a
        final state."""
    def on_error(self, callback: Callable[[ErrorReport], Any]) -> Callable[[ErrorReport], Any]:
        """Calls `callback` (a function or an `async def`) for every error report."""
    def remove_listener(self, callback: Callable[..., Any]) -> bool:
        """Removes a result or error listener."""
    def on_event(
        self, method: str, callback: Callable[[Request], Union[MethodReturn, Awaitable[MethodReturn]]]
    ) -> Callable[[Request], Union[MethodReturn, Awaitable[MethodReturn]]]:
        """Serves the event method `method` with `callback`."""
    def method(self, name: str, *, kind: Kind = "command", repeatable: bool = False) -> MethodDecorator:
        """A decorator serving a method with a sync or async Python function."""
    def serve(
        self,
        name: str,
        callback: Callable[[Request], Union[MethodReturn, Awaitable[MethodReturn]]],
        *,
        kind: Kind = "command",
        repeatable: bool = False,
    ) -> None:
        """Serves (or replaces) the method `name` with `callback`."""
    def unserve(self, name: str) -> bool:
        """Stops serving the method `name`."""
    def status(self) -> list[DestinationStatus]:
        """What this node knows about every destination."""
    def message(self, id: str) -> Optional[MessageStatus]:
        """The state of a message this node sent, or None if unknown."""
    def recent_messages(self, limit: int = 20) -> list[MessageStatus]:
        """The most recently sent messages, newest first."""
    def receipt(self, id: str) -> Receipt:
        """A `Receipt` for a message this node sent (also before a restart); NotFound if unknown."""
    def cancel(self, id: str) -> bool:
        """Cancels a message not yet received; False if too late; NotFound if the id is unknown."""
    def keys(self) -> list[dict[str, Any]]:
        """Central only: every registered key (`node`, `key`, `state`, `since_ms`)."""
    def approve_key(self, node: str, key: Optional[str] = None) -> int:
        """Central only: approves a node's key (or its only pending one); the new trust version."""
    def revoke_key(self, node: str, key: Optional[str] = None) -> int:
        """Central only: revokes a node's key (or its approved one); the new trust version."""
    def join_token(self, valid_for: Optional[Seconds] = 86400.0) -> str:
        """Central only: a new join token (one line of text) for `Node(..., join=token)`, valid
        for `valid_for` seconds (None: until revoked). Treat it as a secret."""
    def join_tokens(self) -> list[dict[str, Any]]:
        """Central only: the join tokens that can still enrol nodes (`id`, `created_ms`,
        `expires_ms` or None, `approved`)."""
    def revoke_join_token(self, id: str) -> None:
        """Central only: revokes a join token by id; NotFound if central has none with that id."""

def _stop_all() -> None:
    """Stops every running node (registered with atexit)."""
