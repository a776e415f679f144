"""qkvshare: Python SDK for the qkvshared daemon and its CacheCards.

    from qkvshare import Client, Card, write_card, model_fingerprint

- `qkvshare.client.Client`: the daemon's gRPC API (tasks, cards, status).
- `qkvshare.codec`: read/validate/dequantize/write .qkvcard files (numpy).
- `qkvshare.hf`: Hugging Face cache adapters (torch, imported lazily).
- `qkvshare.fingerprint`: the model fingerprint (standard library only).
- `qkvshare.errors`: the exceptions.

Names are imported on first use, so `import qkvshare` needs neither numpy
nor grpc; the codec needs numpy, the client grpcio + protobuf, the HF
adapters torch.
"""
__version__ = "0.1.0"

_LAZY = {
    "Client": ("client", "Client"),
    "Card": ("codec", "Card"),
    "write_card": ("codec", "write_card"),
    "model_fingerprint": ("fingerprint", "model_fingerprint"),
    "model_fingerprint_hex": ("fingerprint", "model_fingerprint_hex"),
    "QkvError": ("errors", "QkvError"),
    "CardError": ("errors", "CardError"),
    "RpcError": ("errors", "RpcError"),
    "NotFound": ("errors", "NotFound"),
    "InvalidArgument": ("errors", "InvalidArgument"),
    "ResourceExhausted": ("errors", "ResourceExhausted"),
    "FailedPrecondition": ("errors", "FailedPrecondition"),
    "AlreadyExists": ("errors", "AlreadyExists"),
    "Unavailable": ("errors", "Unavailable"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module("." + mod, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError("module 'qkvshare' has no attribute %r" % name)
