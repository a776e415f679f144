"""Corrupt cards raise CardError with the C++ reader's code and check name;
the C++ tool rejects the same bytes. Nothing crashes the interpreter."""
import struct

import numpy as np
import pytest

from conftest import GOLDEN_CARD
from qkvshare.codec import CHECKSUM_OFFSET, Card, header_checksum, write_card
from qkvshare.errors import CardError

FP = bytes(range(32))


@pytest.fixture(scope="module")
def good():
    rng = np.random.default_rng(5)
    k = rng.standard_normal((2, 2, 40, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 40, 8)).astype(np.float32)
    return write_card(k, v, range(40), FP, bits=4).to_bytes()


def reseal(b):
    """Recomputes the header checksum, so a later check is the one that fails."""
    b = bytearray(b)
    (meta,) = struct.unpack_from("<Q", b, 16)
    struct.pack_into("<Q", b, CHECKSUM_OFFSET, header_checksum(bytes(b[:meta])))
    return bytes(b)


def expect(data, code, words):
    with pytest.raises(CardError) as e:
        Card.from_bytes(data)
    assert e.value.code == code, str(e.value)
    assert words in str(e.value), str(e.value)
    return e.value


def test_empty_and_truncated(good, dumper):
    expect(b"", "INVALID_ARGUMENT", "empty")
    for n in (1, 3, 6, 100, 255, 256, len(good) // 2, len(good) - 1):
        expect(good[:n], "DATA_LOSS", "truncated")
    rc, err, _ = dumper.run(good[: len(good) - 1])
    assert rc == 1 and "truncated" in err


def test_trailing_bytes(good):
    expect(good + b"\0", "DATA_LOSS", "trailing")


def test_wrong_magic_and_version(good, dumper):
    expect(b"QKVX" + good[4:], "INVALID_ARGUMENT", "not a CacheCard")
    v2 = good[:4] + struct.pack("<I", 2) + good[8:]
    expect(v2, "UNIMPLEMENTED", "format version")
    rc, err, _ = dumper.run(v2)
    assert rc == 1 and "format version" in err


def test_header_checksum(good):
    b = bytearray(good)
    b[150] ^= 0x01  # avg_bits, inside the header
    expect(bytes(b), "DATA_LOSS", "header checksum")


def test_malformed_fields_behind_a_valid_checksum(good):
    b = bytearray(good)
    b[110] = 1  # reserved
    expect(reseal(b), "INVALID_ARGUMENT", "malformed card: reserved")
    b = bytearray(good)
    b[109] = 0  # keys_post_rope
    expect(reseal(b), "UNIMPLEMENTED", "pre-RoPE")
    b = bytearray(good)
    struct.pack_into("<d", b, 152, 3.5)  # avg_bits disagrees with the widths
    expect(reseal(b), "INVALID_ARGUMENT", "avg_bits")
    b = bytearray(good)
    struct.pack_into("<Q", b, 168, 4096)  # token_ids_offset not canonical
    expect(reseal(b), "INVALID_ARGUMENT", "token_ids_offset")


def test_section_checksum_and_padding(good, dumper):
    card = Card.from_bytes(good)
    off, size, _ = card.segments[0].sections[3]  # layer 1 V
    b = bytearray(good)
    b[off + size // 2] ^= 0x40
    e = expect(bytes(b), "DATA_LOSS", "checksum of segment 0 layer 1 V")
    rc, err, _ = dumper.run(bytes(b))
    assert rc == 1 and "checksum of segment 0 layer 1 V" in err
    first_off = card.segments[0].sections[0][0] + card.segments[0].sections[0][1]
    second = card.segments[0].sections[1][0]
    if second > first_off:
        b = bytearray(good)
        b[first_off] = 1
        expect(bytes(b), "DATA_LOSS", "padding")
    del e


def test_corrupt_packed_params_behind_valid_checksums(good):
    # A hostile writer: lo > hi in the first group, checksums recomputed.
    from qkvshare.xxh64 import xxh64
    card = Card.from_bytes(good)
    off, size, _ = card.segments[0].sections[0]
    b = bytearray(good)
    b[off:off + 2] = np.float16(100.0).tobytes()  # lo[0] of block 0 above hi[0]
    sec = card.segments[0]
    rec = 256 + 96  # section records of segment 0 start right after the one segment record
    struct.pack_into("<Q", b, rec + 16, xxh64(bytes(b[off:off + size])))
    bad = Card.from_bytes(reseal(b))  # the container is valid ...
    with pytest.raises(CardError) as e:  # ... its contents are not
        bad.kv()
    assert e.value.code == "INVALID_ARGUMENT" and "lo > hi" in str(e.value)
    del sec


def test_every_flipped_byte_is_caught(good):
    rng = np.random.default_rng(11)
    for pos in rng.choice(len(good), size=300, replace=False):
        b = bytearray(good)
        b[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(CardError):
            Card.from_bytes(bytes(b))


def test_golden_card_flips(dumper):
    good = open(GOLDEN_CARD, "rb").read()
    for pos in range(0, len(good), max(1, len(good) // 50)):
        b = bytearray(good)
        b[pos] ^= 0x80
        with pytest.raises(CardError) as e:
            Card.from_bytes(bytes(b))
        assert e.value.code in ("DATA_LOSS", "INVALID_ARGUMENT", "UNIMPLEMENTED")
