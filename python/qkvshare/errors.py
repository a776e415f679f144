"""Exceptions of the qkvshare SDK.

Every error the SDK raises is a `QkvError`. Two families:

- `CardError`: a CacheCard failed to parse or validate (`qkvshare.codec`), or
  arrays given to the card writer are unusable. `code` is the status code the
  C++ reader gives for the same check (docs/cachecard.md, "Validation"):
  "INVALID_ARGUMENT", "DATA_LOSS", "UNIMPLEMENTED"; the message names the check
  (e.g. "header checksum", "truncated", "checksum of segment 0 layer 1 V").
- `RpcError`: a call to the daemon failed (`qkvshare.client`). `code` is the
  gRPC status code name ("NOT_FOUND", ...), `details` the daemon's message.
  Subclasses per code, so callers can `except NotFound:`.

This module imports nothing beyond the standard library.
"""


class QkvError(Exception):
    """Base class of every error raised by the qkvshare SDK."""

    code = "UNKNOWN"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


class CardError(QkvError, ValueError):
    """A corrupt or unsupported CacheCard, or bad input to the card writer.

    `code`: "INVALID_ARGUMENT" (not a card, malformed field, bad writer
    input), "DATA_LOSS" (truncated, trailing bytes, a checksum or padding
    mismatch) or "UNIMPLEMENTED" (another format version, pre-RoPE keys).
    """


class RpcError(QkvError):
    """A daemon call failed; `code` is the gRPC status code name, `details`
    the daemon's message (which names what was wrong and where)."""

    def __init__(self, code, details):
        super().__init__(details, code)
        self.details = details


class NotFound(RpcError):
    """NOT_FOUND: unknown task, card, workflow or agent."""


class InvalidArgument(RpcError):
    """INVALID_ARGUMENT: bad request (empty input, bad hop spec, corrupt card)."""


class ResourceExhausted(RpcError):
    """RESOURCE_EXHAUSTED: queue full, card over the size limit or store quota."""


class FailedPrecondition(RpcError):
    """FAILED_PRECONDITION: e.g. deleting a card that is in use."""


class AlreadyExists(RpcError):
    """ALREADY_EXISTS: importing a card whose id the store holds."""


class Unavailable(RpcError):
    """UNAVAILABLE: daemon not reachable or shutting down."""


class DeadlineExceeded(RpcError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class Cancelled(RpcError):
    """CANCELLED: the call was cancelled on the client side."""


_BY_CODE = {
    "NOT_FOUND": NotFound,
    "INVALID_ARGUMENT": InvalidArgument,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "FAILED_PRECONDITION": FailedPrecondition,
    "ALREADY_EXISTS": AlreadyExists,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "CANCELLED": Cancelled,
}


def rpc_error(code_name, details):
    """The RpcError subclass instance for a gRPC status code name."""
    return _BY_CODE.get(code_name, RpcError)(code_name, details)
