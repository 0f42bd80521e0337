"""steward: asynchronous command and control of edge nodes over NATS.

A :class:`Node` sends messages to other nodes (``<toNode>.<command|event>.<method>``), keeps each
one durably in its outbox until the receiver acknowledges it, and hands back the result.
Receivers run each message at most once and serve built-in methods (``shellCommand``,
``echo``, ``textLogging``, ...) plus any Python function you register::

    import steward

    with steward.Node("central", brokers=["nats://127.0.0.1:4222"], data_dir="central-data") as node:
        receipt = node.send(to="ship1", method="shellCommand", data=["bash", "-c", "uptime"])
        print(receipt.result(timeout=30).stdout)

Callbacks (``on_result``, ``on_error``, served methods; plain functions or ``async def``) run
on one Python thread per node; an exception in one is logged on the ``steward`` logger and never
stops the node. Log records of the Rust core arrive on the ``steward.*`` loggers. The ``steward``
logger has a ``logging.NullHandler``, so nothing reaches stderr until the application configures
logging (e.g. ``logging.basicConfig()``).
"""

import logging as _logging

# A library's logger stays silent until the application sets up logging: without a handler,
# Python would print WARNING records (e.g. a remote method failure the caller already receives
# as a failed result) to stderr through logging.lastResort.
_logging.getLogger("steward").addHandler(_logging.NullHandler())

from ._steward import (  # noqa: E402
    INSTALL_HINT,
    BrokerAuthError,
    BrokerUnavailable,
    Cancelled,
    ConfigError,
    DataDirInUse,
    DeliveryFailed,
    DestinationStatus,
    ErrorReport,
    Expired,
    InvalidMessage,
    InvalidName,
    IoError,
    MessageStatus,
    MethodDecorator,
    Node,
    NoResult,
    NotAllowed,
    NotFound,
    Receipt,
    Rejected,
    Request,
    Result,
    Stopped,
    StewardError,
    StorageError,
    TimedOut,
    __version__,
)

__all__ = [
    "INSTALL_HINT",
    "BrokerAuthError",
    "BrokerUnavailable",
    "Cancelled",
    "ConfigError",
    "DataDirInUse",
    "DeliveryFailed",
    "DestinationStatus",
    "ErrorReport",
    "Expired",
    "InvalidMessage",
    "InvalidName",
    "IoError",
    "MessageStatus",
    "MethodDecorator",
    "Node",
    "NoResult",
    "NotAllowed",
    "NotFound",
    "Receipt",
    "Rejected",
    "Request",
    "Result",
    "Stopped",
    "StewardError",
    "StorageError",
    "TimedOut",
    "__version__",
]
