"""The quantizer's packed K/V layout in numpy (docs/quantization.md,
"Packed layout" and "Quantization math"), bit-identical to quant/kernels.cc.

A blob is one layer's K or V of `n` tokens with `C` channels (channel
c = h * head_dim + d), a group spec (axis, G) and a width per token (2..8
coded, 16 raw fp16). All arithmetic is float32 in the C++ scalar reference's
order (quant/kernels_scalar.cc), so results match the C++ kernels bit for bit:

    lo = RD16(min), hi = RU16(max)            (fp16, directed rounding)
    R = hi - lo, L = 2^b - 1, s = L / R (0 if R == 0)
    code = trunc(min(L, max(0, (x - lo) * s)) + 0.5)
    x' = lo + code * (R / L)                  (multiply, then add)

Arrays here are [n, C] float32 (token-major). Errors raise
`qkvshare.errors.CardError` ("INVALID_ARGUMENT").
"""
import numpy as np

from .errors import CardError

PER_CHANNEL = 0
PER_TOKEN = 1
FP16_MAX = np.float32(65504.0)
_F32 = np.float32


def valid_bits(b):
    """True for a valid token width: 2..8 or 16."""
    return 2 <= b <= 8 or b == 16


def row_bytes(channels, bits):
    """Bytes of one token's row: ceil(C*b/8) coded, 2C raw."""
    return 2 * channels if bits == 16 else (channels * bits + 7) // 8


def _num_groups(channels, group_size):
    return (channels + group_size - 1) // group_size


def _check(channels, axis, group_size, bits):
    if axis not in (PER_CHANNEL, PER_TOKEN):
        raise CardError("unknown group axis %r" % (axis,), "INVALID_ARGUMENT")
    if group_size < 1:
        raise CardError("group size %d < 1" % group_size, "INVALID_ARGUMENT")
    if channels < 1:
        raise CardError("channels %d < 1" % channels, "INVALID_ARGUMENT")
    bits = np.asarray(bits, dtype=np.int64)
    bad = np.nonzero(~(((bits >= 2) & (bits <= 8)) | (bits == 16)))[0]
    if bad.size:
        t = int(bad[0])
        raise CardError("token %d: invalid width %d bits (want 2..8 or 16)" % (t, bits[t]),
                        "INVALID_ARGUMENT")
    return bits


def _layout(channels, axis, group_size, bits):
    """Byte offsets: (row_off[n], param_off[n] (-1 if none), total_bytes).

    param_off[t] is where the lo/hi arrays of the groups token t uses start
    (per-channel: its block's parameters; per-token: its own)."""
    n = bits.size
    rb = np.where(bits == 16, 2 * channels, (channels * bits + 7) // 8)
    coded = bits <= 8
    row_off = np.empty(n, dtype=np.int64)
    param_off = np.full(n, -1, dtype=np.int64)
    pos = 0
    if axis == PER_CHANNEL:
        for t0 in range(0, n, group_size):
            t1 = min(n, t0 + group_size)
            if coded[t0:t1].any():
                param_off[t0:t1] = pos
                pos += 4 * channels
            sizes = rb[t0:t1]
            row_off[t0:t1] = pos + np.concatenate(([0], np.cumsum(sizes)[:-1]))
            pos += int(sizes.sum())
    else:
        pb = np.where(coded, 4 * _num_groups(channels, group_size), 0)
        step = pb + rb
        start = np.concatenate(([0], np.cumsum(step)[:-1])).astype(np.int64)
        param_off = np.where(coded, start, -1)
        row_off = start + pb
        pos = int(step.sum())
    return row_off, param_off, pos


def packed_bytes(channels, axis, group_size, bits):
    """Size of the blob (quant::PackedBytes)."""
    bits = _check(channels, axis, group_size, bits)
    return _layout(channels, axis, group_size, bits)[2]


def _u16(blob, idx):
    return (blob[idx].astype(np.uint16) | (blob[idx + 1].astype(np.uint16) << 8))


def _f16_bits_to_f32(h):
    return h.view(np.float16).astype(np.float32)


def _half_finite(h):
    return (h & 0x7C00) != 0x7C00


def _half_order_key(h):
    h = h.astype(np.int32)
    return np.where(h & 0x8000, 0x8000 - (h & 0x7FFF), 0x8000 + h)


def _unpack_rows(blob, offs, channels, b):
    nbytes = (channels * b + 7) // 8
    raw = blob[offs[:, None] + np.arange(nbytes)[None, :]]
    bitsarr = np.unpackbits(raw, axis=1, bitorder="little")[:, :channels * b]
    bitsarr = bitsarr.reshape(len(offs), channels, b).astype(np.uint16)
    return (bitsarr << np.arange(b, dtype=np.uint16)).sum(axis=2).astype(np.uint8)


def _pack_rows(codes, b):
    n, channels = codes.shape
    nbytes = (channels * b + 7) // 8
    bitsarr = ((codes[:, :, None] >> np.arange(b, dtype=np.uint8)) & 1).reshape(n, channels * b)
    pad = nbytes * 8 - channels * b
    if pad:
        bitsarr = np.concatenate([bitsarr, np.zeros((n, pad), np.uint8)], axis=1)
    return np.packbits(bitsarr, axis=1, bitorder="little")


def _params(blob, param_off, channels, axis, group_size):
    """(lo_bits, hi_bits) per token, [n, m] uint16 (m = C or #groups)."""
    m = channels if axis == PER_CHANNEL else _num_groups(channels, group_size)
    idx = param_off[:, None] + 2 * np.arange(m)[None, :]
    return _u16(blob, idx), _u16(blob, idx + 2 * m)


def dequantize(blob, channels, axis, group_size, bits, where="packed data"):
    """Decodes a blob to float32 [n, C], bit-identical to quant::Dequantize.

    Raises CardError (INVALID_ARGUMENT) for a blob of the wrong size, or one
    with non-finite / inverted group parameters or non-finite raw values
    (checked for the whole blob before decoding, as the C++ ValidatePacked)."""
    bits = _check(channels, axis, group_size, bits)
    blob = np.frombuffer(blob, dtype=np.uint8) if not isinstance(blob, np.ndarray) else blob
    row_off, param_off, total = _layout(channels, axis, group_size, bits)
    if blob.size != total:
        raise CardError("%s: %d bytes, PackedBytes() is %d" % (where, blob.size, total),
                        "INVALID_ARGUMENT")
    n = bits.size
    out = np.empty((n, channels), dtype=np.float32)
    coded = np.nonzero(bits <= 8)[0]
    raw = np.nonzero(bits == 16)[0]
    if coded.size:
        lo_b, hi_b = _params(blob, param_off[coded], channels, axis, group_size)
        ok = _half_finite(lo_b) & _half_finite(hi_b) & (_half_order_key(lo_b) <= _half_order_key(hi_b))
        if not ok.all():
            t = int(coded[np.nonzero(~ok.all(axis=1))[0][0]])
            raise CardError("%s: group parameters of token %d at byte %d are not finite (or lo > hi)"
                            % (where, t, int(param_off[t])), "INVALID_ARGUMENT")
    if raw.size:
        rv = _u16(blob, row_off[raw][:, None] + 2 * np.arange(channels)[None, :])
        ok = _half_finite(rv)
        if not ok.all():
            t = int(raw[np.nonzero(~ok.all(axis=1))[0][0]])
            raise CardError("%s: raw fp16 row of token %d at byte %d is not finite"
                            % (where, t, int(row_off[t])), "INVALID_ARGUMENT")
        out[raw] = _f16_bits_to_f32(rv)
    if coded.size:
        lo = _f16_bits_to_f32(lo_b)
        rng = _f16_bits_to_f32(hi_b) - lo
        if axis == PER_TOKEN:
            g = np.arange(channels) // group_size
            lo, rng = lo[:, g], rng[:, g]
        cb = bits[coded]
        for b in np.unique(cb):
            sel = cb == b
            ts = coded[sel]
            codes = _unpack_rows(blob, row_off[ts], channels, int(b))
            step = rng[sel] / _F32((1 << int(b)) - 1)
            out[ts] = lo[sel] + codes.astype(np.float32) * step
    return out


def f16_directed(x, up):
    """float32 array -> fp16 bit patterns (uint16), rounded toward +inf (up)
    or -inf, exact for |x| <= 65504 (quant::FloatToHalf kUp / kDown)."""
    x = np.asarray(x, dtype=np.float32)
    h = x.astype(np.float16)
    back = h.astype(np.float32)
    fix = back < x if up else back > x
    if fix.any():
        h = h.copy()
        h[fix] = np.nextafter(h[fix], np.float16(np.inf if up else -np.inf))
    return h.view(np.uint16)


def check_range(x, heads_dim=None, where=""):
    """Raises CardError naming the first element (token-major) that is NaN,
    infinite or beyond the fp16 range, as quant::Quantize does."""
    bad = ~(np.abs(x) <= FP16_MAX)
    if not bad.any():
        return
    t, c = (int(i) for i in np.argwhere(bad)[0])
    v = x[t, c]
    loc = "token %d, channel %d" % (t, c)
    if heads_dim:
        loc += " (head %d, dim %d)" % (c // heads_dim, c % heads_dim)
    if np.isnan(v):
        msg = "NaN at " + loc
    elif np.isinf(v):
        msg = "Inf at " + loc
    else:
        msg = "value %g at %s is beyond the fp16 range (|x| <= 65504) of the packed format" % (v, loc)
    raise CardError(where + msg, "INVALID_ARGUMENT")


def quantize(x, axis, group_size, bits, head_dim=None):
    """Packs float32 [n, C] into a blob, bit-identical to quant::Quantize.

    `bits`: width per token (2..8, 16). Raises CardError (INVALID_ARGUMENT)
    for a bad spec or width, or an element that is NaN/Inf/beyond +-65504."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, channels = x.shape
    bits = _check(channels, axis, group_size, bits)
    if bits.size != n:
        raise CardError("%d tokens but %d token widths" % (n, bits.size), "INVALID_ARGUMENT")
    check_range(x, head_dim)
    row_off, param_off, total = _layout(channels, axis, group_size, bits)
    blob = np.zeros(total, dtype=np.uint8)
    coded = bits <= 8
    m = channels if axis == PER_CHANNEL else _num_groups(channels, group_size)
    # Group minima/maxima per token's groups: [n, m] (rows of blocks without
    # a coded token stay 0 and are never stored).
    if axis == PER_CHANNEL:
        mn = np.zeros((n, channels), np.float32)
        mx = np.zeros((n, channels), np.float32)
        for t0 in range(0, n, group_size):
            t1 = min(n, t0 + group_size)
            c = coded[t0:t1]
            if c.any():
                mn[t0:t1] = x[t0:t1][c].min(axis=0)
                mx[t0:t1] = x[t0:t1][c].max(axis=0)
    else:
        pad = m * group_size - channels
        xp = np.pad(x, ((0, 0), (0, pad)), constant_values=np.nan) if pad else x
        xg = xp.reshape(n, m, group_size)
        mn = np.nanmin(xg, axis=2) if pad else xg.min(axis=2)
        mx = np.nanmax(xg, axis=2) if pad else xg.max(axis=2)
    lo_b = f16_directed(mn + _F32(0.0), up=False)
    hi_b = f16_directed(mx + _F32(0.0), up=True)
    lo = _f16_bits_to_f32(lo_b)
    rng = _f16_bits_to_f32(hi_b) - lo
    ct = np.nonzero(coded)[0]
    if ct.size:
        # Parameters: write each token's (per-channel: each block's) lo/hi.
        starts = param_off[ct]
        uniq, first = np.unique(starts, return_index=True)
        src = ct[first]
        idx = uniq[:, None] + 2 * np.arange(m)[None, :]
        for arr, base in ((lo_b, 0), (hi_b, 2 * m)):
            v = arr[src]
            blob[idx + base] = (v & 0xFF).astype(np.uint8)
            blob[idx + base + 1] = (v >> 8).astype(np.uint8)
        if axis == PER_TOKEN:
            g = np.arange(channels) // group_size
            lo_c, rng_c = lo[:, g], rng[:, g]
        else:
            lo_c, rng_c = lo, rng
        cb = bits[ct]
        for b in np.unique(cb):
            ts = ct[cb == b]
            levels = _F32((1 << int(b)) - 1)
            r = rng_c[ts]
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(r > 0, levels / r, _F32(0.0)).astype(np.float32)
            v = (x[ts] - lo_c[ts]) * scale
            v = np.minimum(np.maximum(v, _F32(0.0)), levels)
            codes = (v + _F32(0.5)).astype(np.int32).astype(np.uint8)
            packed = _pack_rows(codes, int(b))
            blob[row_off[ts][:, None] + np.arange(packed.shape[1])[None, :]] = packed
    rt = np.nonzero(bits == 16)[0]
    if rt.size:
        h = x[rt].astype(np.float16).view(np.uint16)
        idx = row_off[rt][:, None] + 2 * np.arange(channels)[None, :]
        blob[idx] = (h & 0xFF).astype(np.uint8)
        blob[idx + 1] = (h >> 8).astype(np.uint8)
    return blob.tobytes()


def uniform_bits(n, budget):
    """The controller's `uniform` plan (quant/controller.cc Uniform): k_bits,
    v_bits (uint8 [n]) averaging `budget` (2..8 or 16) code bits."""
    if budget == 16:
        return np.full(n, 16, np.uint8), np.full(n, 16, np.uint8)
    if not 2 <= budget <= 8:
        raise CardError("budget %r outside [2, 8] (or 16)" % (budget,), "INVALID_ARGUMENT")
    import math
    base = 8 if budget >= 8 else int(math.floor(budget))
    extra = 0
    if base != 8:
        e = (budget - base) * 2.0 * float(n)
        extra = int(math.floor(e)) + (1 if e - math.floor(e) >= 0.5 else 0)  # llround, e >= 0
    k = np.full(n, base, np.uint8)
    v = np.full(n, base, np.uint8)
    both, odd = extra // 2, extra % 2 != 0
    for i in range(n):
        if (i + 1) * both // n > i * both // n:
            k[i] += 1
            v[i] += 1
        elif odd:
            k[i] += 1
            odd = False
    return k, v
