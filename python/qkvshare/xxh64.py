"""XXH64 (seed 0 by default), the checksum of CacheCard headers and sections.

Uses the system libxxhash (Debian `libxxhash0`, which the C++ build links as
well) through ctypes when it is present, else a pure-Python implementation of
the same algorithm (slow: about 1 MB/s; fine for tests and small cards).
"""
import ctypes
import ctypes.util

_MASK = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc, lane):
    acc = (acc + lane * _P2) & _MASK
    return (_rotl(acc, 31) * _P1) & _MASK


def _merge(acc, val):
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _MASK


def xxh64_python(data, seed=0):
    """Pure-Python XXH64 of a bytes-like object."""
    b = bytes(data)
    n = len(b)
    i = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _MASK
        v2 = (seed + _P2) & _MASK
        v3 = seed & _MASK
        v4 = (seed - _P1) & _MASK
        frm = int.from_bytes
        while i + 32 <= n:
            v1 = _round(v1, frm(b[i:i + 8], "little"))
            v2 = _round(v2, frm(b[i + 8:i + 16], "little"))
            v3 = _round(v3, frm(b[i + 16:i + 24], "little"))
            v4 = _round(v4, frm(b[i + 24:i + 32], "little"))
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
        for v in (v1, v2, v3, v4):
            h = _merge(h, v)
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(b[i:i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(b[i:i + 4], "little") * _P1) & _MASK
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h ^= (b[i] * _P5) & _MASK
        h = (_rotl(h, 11) * _P1) & _MASK
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _MASK
    h ^= h >> 29
    h = (h * _P3) & _MASK
    h ^= h >> 32
    return h


def _load_lib():
    for name in ("libxxhash.so.0", ctypes.util.find_library("xxhash")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            fn = lib.XXH64
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_uint64
        fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64)
        return fn
    return None


_LIB = _load_lib()
BACKEND = "libxxhash" if _LIB is not None else "python"


def xxh64(data, seed=0):
    """XXH64 of a bytes-like object (bytes, bytearray, memoryview, numpy
    uint8 array) as an unsigned 64-bit int."""
    if _LIB is None:
        return xxh64_python(data, seed)
    b = data if isinstance(data, bytes) else bytes(data)
    return _LIB(b, len(b), seed)
