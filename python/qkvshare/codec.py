"""CacheCard format v1 in numpy: read, validate, dequantize, write.

The byte format is docs/cachecard.md; this module mirrors the C++ reader
(cachecard/metadata_codec.cc, cachecard/card.cc) check for check, in the
same order, with the same status codes and message words, so a corrupt card
raises `CardError` whose `code` and message name the failed check:

    INVALID_ARGUMENT  "empty", "not a CacheCard", "malformed card: <field>"
    DATA_LOSS         "truncated", "trailing", "metadata_bytes",
                      "header checksum", "checksum of segment s layer l K|V",
                      "padding"
    UNIMPLEMENTED     "format version", "pre-RoPE"

Dequantized K/V are float32 and bit-identical to the C++ decoder
(`cachecard:dump_card` prints the C++ side). `write_card` builds
self-contained cards (full or quantized) from arrays.

Shapes: K and V are [num_layers, num_kv_heads, tokens, head_dim] (the HF
legacy-cache layout without the batch axis); `Card.kv()` returns
[num_layers, 2, num_kv_heads, tokens, head_dim] (axis 1: 0 = K, 1 = V) for
the tokens the card carries, positions [first_token, first_token+num_tokens).
"""
import hashlib
import math
import os
import struct
import time

import numpy as np

from . import quant
from .errors import CardError
from .xxh64 import xxh64

MAGIC = b"QKVC"
FORMAT_VERSION = 2
HEADER_BYTES = 256
SEGMENT_BYTES = 96
SECTION_BYTES = 24
META_ALIGN = 8
SECTION_ALIGN = 64
MAX_LAYERS = MAX_KV_HEADS = MAX_HEAD_DIM = 4096
MAX_CHANNELS = 65536
MAX_CONTEXT_TOKENS = (1 << 31) - 1
MAX_SEGMENTS = 65536
MAX_STRING_BYTES = 1024
MAX_GROUP_SIZE = 1 << 24
CHECKSUM_OFFSET = 24

FULL, QUANTIZED = 0, 1
MODE_NAMES = {FULL: "full", QUANTIZED: "quantized"}
DTYPES = {0: "f32", 1: "f16", 2: "bf16"}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
DTYPE_SIZE = {0: 4, 1: 2, 2: 2}

_HEADER = struct.Struct("<4sIQQQ32s16s16sIIIBB2sQQIIqddQQQQII56s")
_SEGMENT = struct.Struct("<QQBBBBIII16sQQQ24s")
_SECTION = struct.Struct("<QQQ")
assert _HEADER.size == HEADER_BYTES and _SEGMENT.size == SEGMENT_BYTES


def _align(x, a):
    return (x + a - 1) // a * a


def _malformed(msg):
    return CardError("malformed card: " + msg, "INVALID_ARGUMENT")


CARD_ID_DOMAIN = b"qkvshare.card-id.v2\0"  # docs/cachecard.md "Card id", row 1


def content_id(data):
    """The content-derived card id (16 bytes) of the card bytes `data`,
    exactly as docs/cachecard.md "Card id" specifies the SHA-256 preimage.
    REQUIRES: `data` is a well-formed card (offsets are read, not checked)."""
    data = memoryview(bytes(data))
    u32 = lambda off: struct.unpack_from("<I", data, off)[0]
    u64 = lambda off: struct.unpack_from("<Q", data, off)[0]
    pre = [CARD_ID_DOMAIN, data[4:8], data[32:64], data[80:96], data[96:108], data[108:109],
           data[112:128], data[128:132]]
    total = u64(112) + u64(120)
    t0 = u64(168)
    pre.append(data[t0:t0 + 4 * total])
    layers = u32(96)
    for s in range(u32(128)):
        rec = HEADER_BYTES + SEGMENT_BYTES * s
        n = u64(rec + 8)
        pre += [data[rec:rec + 16], data[rec + 16:rec + 20], data[rec + 20:rec + 28]]
        pre += [data[u64(rec + 48):u64(rec + 48) + n], data[u64(rec + 56):u64(rec + 56) + n]]
        for i in range(2 * layers):
            sec = u64(rec + 64) + SECTION_BYTES * i
            off, size = u64(sec), u64(sec + 8)
            pre += [data[sec + 8:sec + 16], hashlib.sha256(data[off:off + size]).digest()]
    cid = bytearray(hashlib.sha256(b"".join(bytes(p) for p in pre)).digest()[:16])
    if not any(cid):
        cid[15] = 1
    return bytes(cid)


def header_checksum(metadata):
    """XXH64 of the metadata with the header_checksum field taken as zero."""
    b = bytearray(metadata)
    b[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 8] = bytes(8)
    return xxh64(bytes(b))


class Segment:
    """One run of tokens with one encoding (docs/cachecard.md "SegmentRecord").

    first_token, num_tokens: positions; mode: "full" | "quantized";
    raw_dtype: "f32"/"f16"/"bf16" (full) or None; k_axis/v_axis: 0 per-channel,
    1 per-token; k_group_size/v_group_size; k_bits/v_bits: uint8 [num_tokens];
    origin_hop_index, origin_card_id (hex); sections: list of
    (offset, bytes, checksum) for [layer][K, V], index 2*layer + side."""

    def __repr__(self):
        return "Segment(first_token=%d, num_tokens=%d, mode=%s)" % (
            self.first_token, self.num_tokens, self.mode)


def _layout_metadata(num_layers, seg_tokens, total, agent_bytes, policy_bytes):
    cur = HEADER_BYTES
    segments_offset = _align(cur, META_ALIGN)
    cur = segments_offset + len(seg_tokens) * SEGMENT_BYTES
    rec = []
    for _ in seg_tokens:
        off = _align(cur, META_ALIGN)
        rec.append(off)
        cur = off + 2 * num_layers * SECTION_BYTES
    token_ids_offset = _align(cur, META_ALIGN)
    cur = token_ids_offset + 4 * total
    kb, vb = [], []
    for n in seg_tokens:
        off = _align(cur, META_ALIGN)
        kb.append(off)
        cur = off + n
        off = _align(cur, META_ALIGN)
        vb.append(off)
        cur = off + n
    agent_off = _align(cur, META_ALIGN)
    cur = agent_off + agent_bytes
    policy_off = _align(cur, META_ALIGN)
    cur = policy_off + policy_bytes
    return dict(segments_offset=segments_offset, records=rec, token_ids_offset=token_ids_offset,
                k_bits=kb, v_bits=vb, source_agent_offset=agent_off,
                quant_policy_offset=policy_off, metadata_bytes=_align(cur, SECTION_ALIGN))


def _section_bytes(channels, seg, is_key):
    if seg.mode == "full":
        return channels * seg.num_tokens * DTYPE_SIZE[DTYPE_CODES[seg.raw_dtype]]
    if is_key:
        return quant.packed_bytes(channels, seg.k_axis, seg.k_group_size, seg.k_bits)
    return quant.packed_bytes(channels, seg.v_axis, seg.v_group_size, seg.v_bits)


def _layout_sections(num_layers, channels, metadata_bytes, segments):
    cur = metadata_bytes
    out = []
    for seg in segments:
        refs = []
        for i in range(2 * num_layers):
            size = _section_bytes(channels, seg, i % 2 == 0)
            off = _align(cur, SECTION_ALIGN)
            refs.append((off, size))
            cur = off + size
        out.append(refs)
    return out, cur


class Card:
    """A validated CacheCard (immutable). Build with `Card.from_bytes`,
    `Card.load` or `write_card`; fields as in docs/cachecard.md.

    Attributes: format_version, card_bytes, metadata_bytes, fingerprint
    (32 bytes; `fingerprint_hex`), card_id / parent_id (32 hex digits; parent
    "" for a self-contained card), num_layers, num_kv_heads, head_dim,
    source_dtype ("f32"/"f16"/"bf16"), first_token, num_tokens,
    total_tokens, hop_index, created_unix_ms, budget_bits, avg_bits,
    source_agent, quant_policy, token_ids (uint32 [total_tokens]),
    segments (list of Segment)."""

    def __init__(self):
        raise TypeError("use Card.from_bytes, Card.load or write_card")

    @classmethod
    def load(cls, path, verify=True):
        """Reads and validates a .qkvcard file. Raises CardError; OSError on I/O."""
        with open(path, "rb") as f:
            return cls.from_bytes(f.read(), verify=verify)

    @classmethod
    def from_bytes(cls, data, verify=True):
        """Parses and validates a card's bytes (the whole card, nothing more).

        verify=False skips the section checksums (the metadata is always
        checked). Raises CardError naming the failed check."""
        self = object.__new__(cls)
        self._data = bytes(data)
        self._parse()
        if verify:
            self.verify_sections()
        return self

    @classmethod
    def from_shm(cls, shm_name, verify=True):
        """Reads a card straight from the daemon's shared-memory store, by its
        POSIX name (CardInfo.shm_name, "/qkvshare.<instance>.<id>"; needs the
        daemon's user, mode 0600). Chained cards come as stored: incremental
        (first_token > 0), unlike export. Raises FileNotFoundError for an
        evicted card, CardError for one being written."""
        import mmap
        path = os.path.join("/dev/shm", shm_name.lstrip("/"))
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return cls.from_bytes(b"", verify=verify)
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
                return cls.from_bytes(m[:], verify=verify)

    # -- parsing ---------------------------------------------------------
    def _parse(self):
        d = self._data
        n = len(d)
        if n == 0:
            raise CardError("empty card (0 bytes)", "INVALID_ARGUMENT")

        def truncated(need, what):
            return CardError("truncated card: %d bytes, the %s needs %d" % (n, what, need),
                             "DATA_LOSS")

        if n < 4:
            raise truncated(4, "magic")
        if d[:4] != MAGIC:
            raise CardError('not a CacheCard: magic is 0x%s, expected "QKVC"' % d[:4].hex(),
                            "INVALID_ARGUMENT")
        if n < 8:
            raise truncated(8, "format version")
        (version,) = struct.unpack_from("<I", d, 4)
        if version != FORMAT_VERSION:
            raise CardError("card format version %d is not supported (this build reads version %d)"
                            % (version, FORMAT_VERSION), "UNIMPLEMENTED")
        if n < HEADER_BYTES:
            raise truncated(HEADER_BYTES, "header")
        (magic, self.format_version, card_bytes, metadata_bytes, stored_checksum, fp, cid, pid,
         layers, heads, head_dim, src_dtype, post_rope, res0, first, ntok, nseg, hop, created,
         budget, avg, seg_off, tok_off, agent_off, policy_off, agent_bytes, policy_bytes,
         res1) = _HEADER.unpack_from(d, 0)
        if card_bytes > n:
            raise CardError("truncated card: %d bytes available, the header declares card_bytes %d"
                            % (n, card_bytes), "DATA_LOSS")
        if card_bytes < n:
            raise CardError("trailing bytes after the card: %d bytes available, card_bytes is %d"
                            % (n, card_bytes), "DATA_LOSS")
        if metadata_bytes < HEADER_BYTES or metadata_bytes > card_bytes:
            raise CardError("metadata_bytes %d outside [%d, card_bytes %d]"
                            % (metadata_bytes, HEADER_BYTES, card_bytes), "DATA_LOSS")
        meta = d[:metadata_bytes]
        computed = header_checksum(meta)
        if computed != stored_checksum:
            raise CardError("header checksum mismatch: stored %x, computed %x"
                            % (stored_checksum, computed), "DATA_LOSS")
        # CheckHeaderFields
        if any(res0) or any(res1):
            raise _malformed("reserved header bytes are not zero")
        if post_rope == 0:
            raise CardError("card holds pre-RoPE keys; only post-RoPE keys are supported",
                            "UNIMPLEMENTED")
        if post_rope != 1:
            raise _malformed("keys_post_rope is %d" % post_rope)
        if not (1 <= layers <= MAX_LAYERS and 1 <= heads <= MAX_KV_HEADS
                and 1 <= head_dim <= MAX_HEAD_DIM and heads * head_dim <= MAX_CHANNELS):
            raise _malformed("KV shape (layers %d, kv heads %d, head_dim %d) outside the limits"
                             % (layers, heads, head_dim))
        if first > MAX_CONTEXT_TOKENS or ntok < 1 or ntok > MAX_CONTEXT_TOKENS - first:
            raise _malformed("first_token %d / num_tokens %d outside the limits (total <= %d)"
                             % (first, ntok, MAX_CONTEXT_TOKENS))
        if nseg < 1 or nseg > MAX_SEGMENTS or nseg > ntok:
            raise _malformed("num_segments %d outside 1..min(%d, num_tokens)" % (nseg, MAX_SEGMENTS))
        if agent_bytes > MAX_STRING_BYTES or policy_bytes > MAX_STRING_BYTES:
            raise _malformed("string lengths %d / %d exceed %d"
                             % (agent_bytes, policy_bytes, MAX_STRING_BYTES))
        if seg_off != HEADER_BYTES:
            raise _malformed("segments_offset is %d, expected %d" % (seg_off, HEADER_BYTES))
        records = nseg * (SEGMENT_BYTES + 2 * layers * SECTION_BYTES)
        if records > metadata_bytes - HEADER_BYTES:
            raise _malformed("%d segment records with their section records (%d bytes) do not fit "
                             "in metadata_bytes %d" % (nseg, records, metadata_bytes))
        # Segment records (FromRecord)
        raw_records = []
        segments = []
        for s in range(nseg):
            (sf, sn, mode, raw_dtype, k_axis, v_axis, kg, vg, ohop, ocid, kb_off, vb_off, sec_off,
             res) = _SEGMENT.unpack_from(meta, seg_off + s * SEGMENT_BYTES)
            if any(res):
                raise _malformed("segment %d: reserved bytes are not zero" % s)
            if mode > 1:
                raise _malformed("segment %d: mode %d is not 0 or 1" % (s, mode))
            if sn > MAX_CONTEXT_TOKENS or sf > MAX_CONTEXT_TOKENS:
                raise _malformed("segment %d: first_token %d / num_tokens %d exceed %d"
                                 % (s, sf, sn, MAX_CONTEXT_TOKENS))
            seg = Segment()
            seg.first_token, seg.num_tokens = sf, sn
            seg.mode = MODE_NAMES[mode]
            if mode == FULL:
                if k_axis or v_axis or kg or vg:
                    raise _malformed("segment %d: a full segment has non-zero group fields" % s)
                seg.raw_dtype_code = raw_dtype
                seg.k_axis = seg.v_axis = 0
                seg.k_group_size = seg.v_group_size = 0
            else:
                if raw_dtype != 0:
                    raise _malformed("segment %d: raw_dtype of a quantized segment" % s)
                if kg > MAX_GROUP_SIZE or vg > MAX_GROUP_SIZE:
                    raise _malformed("segment %d: group size %d exceeds %d"
                                     % (s, max(kg, vg), MAX_GROUP_SIZE))
                seg.raw_dtype_code = None
                seg.k_axis, seg.v_axis, seg.k_group_size, seg.v_group_size = k_axis, v_axis, kg, vg
            seg.origin_hop_index = ohop
            seg.origin_card_id = ocid.hex()
            raw_records.append((kb_off, vb_off, sec_off))
            segments.append(seg)
        total = first + ntok
        lay = _layout_metadata(layers, [g.num_tokens for g in segments], total, agent_bytes,
                               policy_bytes)

        def expect(field, stored, want):
            if stored != want:
                raise _malformed("%s is %d, expected %d" % (field, stored, want))

        expect("metadata_bytes", metadata_bytes, lay["metadata_bytes"])
        expect("token_ids_offset", tok_off, lay["token_ids_offset"])
        expect("source_agent_offset", agent_off, lay["source_agent_offset"])
        expect("quant_policy_offset", policy_off, lay["quant_policy_offset"])
        regions = [(0, HEADER_BYTES), (seg_off, nseg * SEGMENT_BYTES)]
        for s, (kb_off, vb_off, sec_off) in enumerate(raw_records):
            expect("segment %d sections_offset" % s, sec_off, lay["records"][s])
            expect("segment %d k_bits_offset" % s, kb_off, lay["k_bits"][s])
            expect("segment %d v_bits_offset" % s, vb_off, lay["v_bits"][s])
            regions.append((lay["records"][s], 2 * layers * SECTION_BYTES))
        regions.append((tok_off, 4 * total))
        token_ids = np.frombuffer(meta, dtype="<u4", count=total, offset=tok_off)
        big = np.nonzero(token_ids > 0x7FFFFFFF)[0]
        if big.size:
            i = int(big[0])
            raise _malformed("token id %d at position %d exceeds 2^31 - 1" % (token_ids[i], i))
        mb = np.frombuffer(meta, dtype=np.uint8)
        for s, seg in enumerate(segments):
            seg.k_bits = mb[lay["k_bits"][s]:lay["k_bits"][s] + seg.num_tokens].copy()
            seg.v_bits = mb[lay["v_bits"][s]:lay["v_bits"][s] + seg.num_tokens].copy()
            regions.append((lay["k_bits"][s], seg.num_tokens))
            regions.append((lay["v_bits"][s], seg.num_tokens))
            seg.sections = [_SECTION.unpack_from(meta, lay["records"][s] + i * SECTION_BYTES)
                            for i in range(2 * layers)]
        self.source_agent = meta[agent_off:agent_off + agent_bytes].decode("utf-8", "replace")
        self.quant_policy = meta[policy_off:policy_off + policy_bytes].decode("utf-8", "replace")
        regions.append((agent_off, agent_bytes))
        regions.append((policy_off, policy_bytes))
        # CheckPadding: every byte outside the regions is zero.
        pos = 0
        for off, length in regions + [(metadata_bytes, 0)]:
            if off > pos:
                nz = np.flatnonzero(mb[pos:off])
                if nz.size:
                    raise _malformed("padding byte at offset %d is not zero" % (pos + int(nz[0])))
            pos = off + length
        # ValidateMetadata (the fields not covered above).
        if src_dtype not in DTYPES:
            raise _malformed("source_dtype %d is not a known dtype" % src_dtype)
        if not any(cid):
            raise _malformed("card_id is zero")
        if (not any(pid)) != (first == 0):
            raise _malformed("parent_id %s with first_token %d (a parent is required exactly when "
                             "first_token > 0)" % (pid.hex(), first))
        if not math.isfinite(budget) or budget < 0 or budget > 32:
            raise _malformed("budget_bits %r outside [0, 32]" % budget)
        nxt = first
        bit_sum = bit_count = 0
        for s, seg in enumerate(segments):
            where = "segment %d" % s
            if seg.first_token != nxt:
                raise _malformed("%s: first_token %d, expected %d (segments must be contiguous)"
                                 % (where, seg.first_token, nxt))
            if seg.num_tokens < 1 or seg.num_tokens > ntok:
                raise _malformed("%s: num_tokens %d outside 1..%d" % (where, seg.num_tokens, ntok))
            if seg.origin_card_id == "0" * 32:
                raise _malformed("%s: origin_card_id is zero" % where)
            if seg.mode == "full":
                if seg.raw_dtype_code not in DTYPES:
                    raise _malformed("%s: raw_dtype %d is not a known dtype"
                                     % (where, seg.raw_dtype_code))
                seg.raw_dtype = DTYPES[seg.raw_dtype_code]
                want = 8 * DTYPE_SIZE[seg.raw_dtype_code]
            else:
                seg.raw_dtype = None
                for side, axis, g in (("k", seg.k_axis, seg.k_group_size),
                                      ("v", seg.v_axis, seg.v_group_size)):
                    if axis not in (0, 1):
                        raise _malformed("%s: %s_axis %d is not 0 (per-channel) or 1 (per-token)"
                                         % (where, side, axis))
                    if g < 1 or g > MAX_GROUP_SIZE:
                        raise _malformed("%s: %s_group_size %d outside 1..%d"
                                         % (where, side, g, MAX_GROUP_SIZE))
            for side, bits in (("k", seg.k_bits), ("v", seg.v_bits)):
                if seg.mode == "full":
                    bad = np.nonzero(bits != want)[0]
                else:
                    bad = np.nonzero(~(((bits >= 2) & (bits <= 8)) | (bits == 16)))[0]
                if bad.size:
                    t = int(bad[0])
                    raise _malformed("%s: %s_bits[%d] = %d is not a valid width (token %d)"
                                     % (where, side, t, bits[t], seg.first_token + t))
                bit_sum += int(bits.sum(dtype=np.int64))
                bit_count += bits.size
            nxt += seg.num_tokens
        if nxt != total:
            raise _malformed("segments end at token %d, the card at %d" % (nxt, total))
        mean = bit_sum / bit_count
        if avg != mean:
            raise _malformed("avg_bits %r differs from the bit widths' mean %r" % (avg, mean))
        planned, end = _layout_sections(layers, heads * head_dim, metadata_bytes, segments)
        for s, seg in enumerate(segments):
            for i, (off, size) in enumerate(planned[s]):
                got = seg.sections[i]
                if got[0] != off or got[1] != size:
                    raise _malformed("segment %d layer %d %s section at %d of %d bytes, expected "
                                     "%d of %d" % (s, i // 2, "KV"[i % 2], got[0], got[1], off, size))
        expect("card_bytes", card_bytes, end)
        self.card_bytes, self.metadata_bytes = card_bytes, metadata_bytes
        self.fingerprint = fp
        self.card_id = cid.hex()
        self.parent_id = pid.hex() if any(pid) else ""
        self.num_layers, self.num_kv_heads, self.head_dim = layers, heads, head_dim
        self.source_dtype = DTYPES[src_dtype]
        self.first_token, self.num_tokens, self.total_tokens = first, ntok, total
        self.hop_index, self.created_unix_ms = hop, created
        self.budget_bits, self.avg_bits = budget, avg
        self.token_ids = token_ids.copy()
        self.segments = segments

    def verify_sections(self):
        """Checks the padding between sections and every section checksum
        (VerifySectionBytes). Raises CardError (DATA_LOSS)."""
        d = self._data
        pos = self.metadata_bytes
        for s, seg in enumerate(self.segments):
            for i, (off, size, checksum) in enumerate(seg.sections):
                side = "KV"[i % 2]
                if any(d[pos:off]):
                    p = pos + next(j for j, b in enumerate(d[pos:off]) if b)
                    raise CardError("padding byte at offset %d before segment %d layer %d %s "
                                    "section is not zero" % (p, s, i // 2, side), "DATA_LOSS")
                got = xxh64(d[off:off + size])
                if got != checksum:
                    raise CardError("checksum of segment %d layer %d %s section (%d bytes at offset "
                                    "%d) mismatch: stored %x, computed %x"
                                    % (s, i // 2, side, size, off, checksum, got), "DATA_LOSS")
                pos = off + size

    # -- access ------------------------------------------------------------
    @property
    def fingerprint_hex(self):
        return self.fingerprint.hex()

    @property
    def mode(self):
        """"full", "quantized", or "mixed" (a flattened chain of both)."""
        modes = {s.mode for s in self.segments}
        return modes.pop() if len(modes) == 1 else "mixed"

    @property
    def shape(self):
        """(num_layers, num_kv_heads, head_dim)."""
        return (self.num_layers, self.num_kv_heads, self.head_dim)

    def to_bytes(self):
        """The card's bytes (what a .qkvcard file holds)."""
        return self._data

    def save(self, path):
        """Writes the card to a .qkvcard file."""
        with open(path, "wb") as f:
            f.write(self._data)

    def section(self, segment, layer, side):
        """Raw bytes of one section (side 0 = K, 1 = V) as a memoryview."""
        off, size, _ = self.segments[segment].sections[2 * layer + side]
        return memoryview(self._data)[off:off + size]

    def decode_section(self, segment, layer, side):
        """One section as float32 [num_kv_heads, n_s, head_dim], bit-identical
        to the C++ decoder. Raises CardError for corrupt packed contents."""
        seg = self.segments[segment]
        h, hd = self.num_kv_heads, self.head_dim
        c = h * hd
        raw = np.frombuffer(self.section(segment, layer, side), dtype=np.uint8)
        n = seg.num_tokens
        if seg.mode == "full":
            if seg.raw_dtype == "f32":
                x = raw.view("<f4").astype(np.float32)
            elif seg.raw_dtype == "f16":
                x = raw.view("<f2").astype(np.float32)
            else:  # bf16: the high half of a float32
                x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
            return x.reshape(h, n, hd)
        axis, g, bits = ((seg.k_axis, seg.k_group_size, seg.k_bits) if side == 0 else
                         (seg.v_axis, seg.v_group_size, seg.v_bits))
        where = "malformed card: segment %d layer %d %s: packed data" % (segment, layer, "KV"[side])
        x = quant.dequantize(raw, c, axis, g, bits, where=where)
        return np.ascontiguousarray(x.reshape(n, h, hd).transpose(1, 0, 2))

    def kv(self):
        """float32 [num_layers, 2, num_kv_heads, num_tokens, head_dim]: the
        dequantized K (index 0) and V (1) of the carried positions."""
        out = np.empty((self.num_layers, 2, self.num_kv_heads, self.num_tokens, self.head_dim),
                       dtype=np.float32)
        for s, seg in enumerate(self.segments):
            t0 = seg.first_token - self.first_token
            for layer in range(self.num_layers):
                for side in (0, 1):
                    out[layer, side, :, t0:t0 + seg.num_tokens] = self.decode_section(s, layer, side)
        return out

    def bits(self):
        """(k_bits, v_bits): uint8 [num_tokens] widths of the carried tokens."""
        return (np.concatenate([s.k_bits for s in self.segments]),
                np.concatenate([s.v_bits for s in self.segments]))

    # -- Hugging Face adapters (torch imported lazily by qkvshare.hf) -------
    def to_legacy_cache(self, dtype=None, device=None):
        """See qkvshare.hf.to_legacy_cache."""
        from . import hf
        return hf.to_legacy_cache(self, dtype=dtype, device=device)

    def to_dynamic_cache(self, dtype=None, device=None):
        """See qkvshare.hf.to_dynamic_cache."""
        from . import hf
        return hf.to_dynamic_cache(self, dtype=dtype, device=device)

    @classmethod
    def from_past_key_values(cls, past_key_values, token_ids, model_dir, bits=4,
                             policy="uniform", **kwargs):
        """See qkvshare.hf.card_from_past_key_values."""
        from . import hf
        return hf.card_from_past_key_values(past_key_values, token_ids, model_dir, bits=bits,
                                            policy=policy, **kwargs)

    def __repr__(self):
        return "Card(id=%s, tokens=%d..%d, mode=%s, avg_bits=%g, layers=%d, kv_heads=%d, " \
               "head_dim=%d)" % (self.card_id, self.first_token, self.total_tokens, self.mode,
                                 self.avg_bits, self.num_layers, self.num_kv_heads, self.head_dim)


def float_to_bf16(x):
    """float32 array -> bf16 bit patterns (uint16), round to nearest even,
    NaN kept quiet (base/dtype.h FloatToBf16)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def _as_fingerprint(fp):
    if isinstance(fp, str):
        fp = bytes.fromhex(fp)
    fp = bytes(fp)
    if len(fp) != 32:
        raise CardError("model fingerprint must be 32 bytes (64 hex digits), got %d bytes" % len(fp),
                        "INVALID_ARGUMENT")
    return fp


def write_card(k, v, token_ids, fingerprint, mode="quantized", bits=4, k_bits=None, v_bits=None,
               group_size=32, k_axis=quant.PER_CHANNEL, v_axis=quant.PER_TOKEN,
               source_agent="python", quant_policy=None, budget_bits=None, hop_index=0,
               created_unix_ms=None, source_dtype="f32", raw_dtype=None):
    """Builds a self-contained card (positions 0..T-1) from arrays.

    k, v: [num_layers, num_kv_heads, T, head_dim] (float32; float16 too for
    mode="full"), keys post-RoPE in HF rotate_half order.
    token_ids: T ints. fingerprint: 32 bytes or 64 hex digits of the model
    (qkvshare.fingerprint.model_fingerprint(model_dir)).
    mode: "full" (sections in `raw_dtype`: "f32", "f16" or "bf16", rounded to
    nearest even; default the arrays' dtype) or "quantized".
    Quantized widths: k_bits/v_bits (T ints in 2..8 or 16, e.g. an adaptive
    plan) if given, else the `uniform` policy at `bits` average bits
    (2..8 or 16, fractional allowed: quant/controller.cc Uniform).
    group_size, k_axis (0 per-channel), v_axis (1 per-token): the daemon's
    defaults. The card id is derived from the content (content_id), as the
    daemon derives it. Returns a validated Card. Raises CardError (INVALID_ARGUMENT)
    for bad shapes, widths or values beyond the fp16 range."""
    k = np.asarray(k)
    v = np.asarray(v)
    if k.ndim != 4 or k.shape != v.shape:
        raise CardError("k and v must both be [layers, kv_heads, tokens, head_dim], got %s and %s"
                        % (k.shape, v.shape), "INVALID_ARGUMENT")
    layers, heads, total, hd = k.shape
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size != total:
        raise CardError("%d token ids for %d tokens of K/V" % (ids.size, total), "INVALID_ARGUMENT")
    if total < 1:
        raise CardError("a card needs at least one token", "INVALID_ARGUMENT")
    if ids.size and (ids.min() < 0 or ids.max() > 0x7FFFFFFF):
        raise CardError("token ids must be in 0..2^31-1", "INVALID_ARGUMENT")
    if source_dtype not in DTYPE_CODES:
        raise CardError("source_dtype must be f32, f16 or bf16", "INVALID_ARGUMENT")
    fp = _as_fingerprint(fingerprint)
    cid = b"\xff" * 16  # placeholder until the content is written
    channels = heads * hd
    seg = Segment()
    seg.first_token, seg.num_tokens = 0, total
    seg.origin_hop_index, seg.origin_card_id = hop_index, cid.hex()
    sections = []
    if mode == "full":
        raw = raw_dtype or {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}.get(k.dtype)
        if raw not in DTYPE_CODES or k.dtype not in (np.float16, np.float32):
            raise CardError("full cards take float32 or float16 arrays (raw_dtype f32, f16 or "
                            "bf16), got %s / %r" % (k.dtype, raw_dtype), "INVALID_ARGUMENT")
        seg.mode, seg.raw_dtype, seg.raw_dtype_code = "full", raw, DTYPE_CODES[raw]
        seg.k_axis = seg.v_axis = seg.k_group_size = seg.v_group_size = 0
        width = 8 * DTYPE_SIZE[seg.raw_dtype_code]
        seg.k_bits = np.full(total, width, np.uint8)
        seg.v_bits = seg.k_bits.copy()
        for layer in range(layers):
            for arr in (k, v):
                x = np.ascontiguousarray(arr[layer])
                if raw == "bf16":
                    x = float_to_bf16(x)
                elif raw != ("f16" if x.dtype == np.float16 else "f32"):
                    x = x.astype(np.float16 if raw == "f16" else np.float32)
                sections.append(x.astype(x.dtype.newbyteorder("<")).tobytes())
        policy = "" if quant_policy is None else quant_policy
        budget = 0.0 if budget_bits is None else budget_bits
    elif mode == "quantized":
        if k_bits is None and v_bits is None:
            kb, vb = quant.uniform_bits(total, bits)
            policy = "uniform" if quant_policy is None else quant_policy
            budget = float(bits) if budget_bits is None else budget_bits
        elif k_bits is None or v_bits is None:
            raise CardError("give both k_bits and v_bits, or neither", "INVALID_ARGUMENT")
        else:
            kb = np.asarray(k_bits, dtype=np.int64).reshape(-1)
            vb = np.asarray(v_bits, dtype=np.int64).reshape(-1)
            if kb.size != total or vb.size != total:
                raise CardError("k_bits/v_bits need %d entries, got %d/%d"
                                % (total, kb.size, vb.size), "INVALID_ARGUMENT")
            policy = "adaptive" if quant_policy is None else quant_policy
            budget = float((kb.sum() + vb.sum()) / (2.0 * total)) if budget_bits is None \
                else budget_bits
        seg.mode, seg.raw_dtype, seg.raw_dtype_code = "quantized", None, 0
        seg.k_axis, seg.v_axis = k_axis, v_axis
        seg.k_group_size = seg.v_group_size = group_size
        if isinstance(group_size, (tuple, list)):
            seg.k_group_size, seg.v_group_size = group_size
        for name, bb in (("k_bits", kb), ("v_bits", vb)):
            bad = np.nonzero(~(((bb >= 2) & (bb <= 8)) | (bb == 16)))[0]
            if bad.size:
                raise CardError("%s[%d] = %d is not a valid width (2..8 or 16)"
                                % (name, bad[0], bb[bad[0]]), "INVALID_ARGUMENT")
        seg.k_bits, seg.v_bits = kb.astype(np.uint8), vb.astype(np.uint8)
        for layer in range(layers):
            for side, arr in enumerate((k, v)):
                x = np.asarray(arr[layer], dtype=np.float32).transpose(1, 0, 2).reshape(total,
                                                                                        channels)
                axis, g, bb = ((seg.k_axis, seg.k_group_size, seg.k_bits) if side == 0 else
                               (seg.v_axis, seg.v_group_size, seg.v_bits))
                try:
                    sections.append(quant.quantize(x, axis, g, bb, head_dim=hd))
                except CardError as e:
                    raise CardError("layer %d %s: %s" % (layer, "KV"[side], e.message), e.code)
    else:
        raise CardError("mode must be 'full' or 'quantized', got %r" % (mode,), "INVALID_ARGUMENT")
    agent_b = source_agent.encode("utf-8")
    policy_b = policy.encode("utf-8")
    if len(agent_b) > MAX_STRING_BYTES or len(policy_b) > MAX_STRING_BYTES:
        raise CardError("source_agent / quant_policy longer than %d bytes" % MAX_STRING_BYTES,
                        "INVALID_ARGUMENT")
    lay = _layout_metadata(layers, [total], total, len(agent_b), len(policy_b))
    planned, card_bytes = _layout_sections(layers, channels, lay["metadata_bytes"], [seg])
    out = bytearray(card_bytes)
    refs = []
    for (off, size), blob in zip(planned[0], sections):
        assert len(blob) == size, (len(blob), size)
        out[off:off + size] = blob
        refs.append((off, size, xxh64(blob)))
    all_bits = np.concatenate([seg.k_bits, seg.v_bits]).astype(np.int64)
    avg = int(all_bits.sum()) / all_bits.size
    created = int(time.time() * 1000) if created_unix_ms is None else int(created_unix_ms)
    _HEADER.pack_into(out, 0, MAGIC, FORMAT_VERSION, card_bytes, lay["metadata_bytes"], 0, fp, cid,
                      bytes(16), layers, heads, hd, DTYPE_CODES[source_dtype], 1, bytes(2), 0,
                      total, 1, hop_index, created, float(budget), avg, lay["segments_offset"],
                      lay["token_ids_offset"], lay["source_agent_offset"],
                      lay["quant_policy_offset"], len(agent_b), len(policy_b), bytes(56))
    _SEGMENT.pack_into(out, lay["segments_offset"], 0, total, FULL if seg.mode == "full" else
                       QUANTIZED, seg.raw_dtype_code or 0, seg.k_axis, seg.v_axis,
                       seg.k_group_size, seg.v_group_size, hop_index, cid, lay["k_bits"][0],
                       lay["v_bits"][0], lay["records"][0], bytes(24))
    for i, ref in enumerate(refs):
        _SECTION.pack_into(out, lay["records"][0] + i * SECTION_BYTES, *ref)
    t0 = lay["token_ids_offset"]
    out[t0:t0 + 4 * total] = ids.astype("<u4").tobytes()
    out[lay["k_bits"][0]:lay["k_bits"][0] + total] = seg.k_bits.tobytes()
    out[lay["v_bits"][0]:lay["v_bits"][0] + total] = seg.v_bits.tobytes()
    a0, p0 = lay["source_agent_offset"], lay["quant_policy_offset"]
    out[a0:a0 + len(agent_b)] = agent_b
    out[p0:p0 + len(policy_b)] = policy_b
    cid = content_id(out)
    out[64:80] = cid  # CardHeader.card_id
    so = lay["segments_offset"] + 32  # SegmentRecord.origin_card_id
    out[so:so + 16] = cid
    struct.pack_into("<Q", out, CHECKSUM_OFFSET, header_checksum(out[:lay["metadata_bytes"]]))
    return Card.from_bytes(bytes(out))
