"""Card codec: parse, validate, dequantize bit-identically to C++ (checked
against cachecard:dump_card), write cards the C++ reader accepts."""
import numpy as np
import pytest

from conftest import GOLDEN_CARD, MODEL_DIR
from qkvshare import quant
from qkvshare.codec import Card, content_id, write_card
from qkvshare.errors import CardError
from qkvshare.fingerprint import model_fingerprint_hex
from qkvshare.xxh64 import xxh64, xxh64_python

FP = bytes(range(32))


def synthetic(layers, heads, tokens, hd, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal((layers, heads, tokens, hd)) * scale).astype(np.float32)
    v = (rng.standard_normal((layers, heads, tokens, hd)) * scale).astype(np.float32)
    # An outlier channel and a constant run, as real keys have.
    k[:, 0, :, 0] *= 40
    v[:, -1, : tokens // 2, -1] = 1.5
    return k, v


def assert_same_bits(a, b):
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_xxh64_known_values():
    assert xxh64(b"") == 0xEF46DB3751D8E999
    data = bytes(range(256)) * 3
    assert xxh64(data) == xxh64_python(data)


def test_pack_layout_example_from_docs():
    # docs/quantization.md: b = 3, codes 0..7 -> bytes 88 c6 fa.
    codes = np.arange(8, dtype=np.uint8)[None, :]
    assert quant._pack_rows(codes, 3).tobytes() == bytes([0x88, 0xC6, 0xFA])
    blob = np.frombuffer(bytes([0x88, 0xC6, 0xFA]), np.uint8)
    np.testing.assert_array_equal(quant._unpack_rows(blob, np.array([0]), 8, 3)[0], codes[0])


def test_directed_fp16_rounding():
    x = np.array([0.1, -0.1, 1.0, -65504.0, 65504.0, 1e-9, -1e-9, 0.0], np.float32)
    lo = quant.f16_directed(x, up=False).view(np.float16).astype(np.float32)
    hi = quant.f16_directed(x, up=True).view(np.float16).astype(np.float32)
    assert (lo <= x).all() and (hi >= x).all()
    assert lo[2] == hi[2] == 1.0 and lo[7] == hi[7] == 0.0
    # One fp16 ulp apart where inexact.
    inexact = lo != hi
    assert inexact[[0, 1, 5, 6]].all()


def test_uniform_plan_matches_controller_rule():
    k, v = quant.uniform_bits(10, 3.25)  # 5 extra steps: 2 tokens +1 both, one odd K
    assert (k.sum() + v.sum()) / 20.0 == pytest.approx(3.25, abs=1 / 40)
    both = [i for i in range(10) if k[i] == 4 and v[i] == 4]
    assert both == [4, 9]  # Bresenham: floor((i+1)*2/10) > floor(i*2/10)
    assert k[0] == 4 and v[0] == 3  # the odd step: K of the first token not chosen
    k, v = quant.uniform_bits(7, 16)
    assert set(k) == set(v) == {16}


def test_golden_card_decodes_like_cpp(dumper):
    card = Card.load(GOLDEN_CARD)
    assert card.format_version == 1 and card.first_token == 0
    assert [s.mode for s in card.segments] == ["quantized", "full"]
    assert_same_bits(card.kv(), dumper.kv(card.to_bytes()))


@pytest.mark.parametrize("heads,hd", [(4, 8), (3, 5)])
@pytest.mark.parametrize("k_axis,v_axis,group", [(0, 1, 32), (1, 0, 3), (0, 0, 1), (1, 1, 7)])
def test_written_cards_match_cpp_every_width(dumper, heads, hd, k_axis, v_axis, group):
    tokens = 45
    k, v = synthetic(2, heads, tokens, hd, seed=heads * 100 + group)
    widths = np.array([2, 3, 4, 5, 6, 7, 8, 16], np.uint8)
    kb = widths[np.arange(tokens) % 8]
    vb = widths[(np.arange(tokens) * 3 + 1) % 8]
    card = write_card(k, v, range(tokens), FP, k_bits=kb, v_bits=vb, group_size=group,
                      k_axis=k_axis, v_axis=v_axis)
    got = card.kv()
    assert_same_bits(got, dumper.kv(card.to_bytes()))  # C++ reader accepts and agrees
    # Error bound of docs/quantization.md, per element of coded tokens: within one step.
    err = np.abs(got[:, 0] - k)
    assert np.isfinite(got).all()
    assert err[:, :, kb == 16].max() <= np.abs(k).max() * 2 ** -11 + 1e-7
    spread = k.max() - k.min()
    assert err[:, :, kb == 8].max() <= spread / 255 * 0.5 * 1.01 + 1e-3


@pytest.mark.parametrize("raw", ["f32", "f16", "bf16"])
def test_full_cards_match_cpp(dumper, raw):
    k, v = synthetic(3, 2, 20, 8, seed=7)
    card = write_card(k, v, range(20), FP, mode="full", raw_dtype=raw, source_dtype=raw)
    assert card.segments[0].raw_dtype == raw and card.source_dtype == raw
    assert card.avg_bits == (32 if raw == "f32" else 16)
    got = card.kv()
    assert_same_bits(got, dumper.kv(card.to_bytes()))
    if raw == "bf16":
        import torch
        want = torch.from_numpy(k).to(torch.bfloat16).float().numpy()  # torch rounds RNE too
    else:
        want = k.astype(np.float16 if raw == "f16" else np.float32).astype(np.float32)
    np.testing.assert_array_equal(got[:, 0], want)


def test_uniform_card_fields():
    k, v = synthetic(2, 4, 33, 8, seed=3)
    card = write_card(k, v, list(range(100, 133)), model_fingerprint_hex(MODEL_DIR), bits=4,
                      source_agent="hf-agent")
    assert card.mode == "quantized" and card.quant_policy == "uniform"
    assert card.avg_bits == 4.0 and card.budget_bits == 4.0
    assert card.fingerprint_hex == model_fingerprint_hex(MODEL_DIR)
    assert card.token_ids.tolist() == list(range(100, 133))
    assert card.source_agent == "hf-agent" and card.parent_id == ""
    again = Card.from_bytes(card.to_bytes())
    assert again.card_id == card.card_id and again.to_bytes() == card.to_bytes()


def test_card_ids_are_content_derived():
    # The checked-in golden card's id (docs/cachecard.md "Card id").
    with open(GOLDEN_CARD, "rb") as f:
        golden = f.read()
    assert content_id(golden).hex() == Card.from_bytes(golden).card_id
    assert Card.from_bytes(golden).card_id == "dbc378aef9bbf0582e4620ee37e14c15"
    # Same content, other provenance: same id; other content: another id.
    k, v = synthetic(2, 4, 20, 8, seed=5)
    ids = list(range(7, 27))
    a = write_card(k, v, ids, FP, bits=4, source_agent="a", created_unix_ms=1)
    b = write_card(k, v, ids, FP, bits=4, source_agent="b", created_unix_ms=2, hop_index=3)
    assert a.card_id == b.card_id and a.to_bytes() != b.to_bytes()
    assert a.segments[0].origin_card_id == a.card_id
    assert write_card(k, v, ids, FP, bits=3).card_id != a.card_id
    assert write_card(k, v, ids[:-1] + [1], FP, bits=4).card_id != a.card_id
    assert write_card(k, v, ids, FP, mode="full").card_id != a.card_id


def test_quantize_is_deterministic_and_matches_dequantize_bound():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 32)) * 10).astype(np.float32)
    for b in range(2, 9):
        bits = np.full(64, b)
        blob = quant.quantize(x, quant.PER_TOKEN, 32, bits)
        assert blob == quant.quantize(x, quant.PER_TOKEN, 32, bits)
        y = quant.dequantize(blob, 32, quant.PER_TOKEN, 32, bits)
        step = (x.max(1) - x.min(1)) / (2 ** b - 1)
        assert (np.abs(y - x).max(1) <= step / 2 * 1.01 + 0.02).all()


def test_writer_rejects_bad_input():
    k, v = synthetic(1, 2, 4, 8, seed=0)
    with pytest.raises(CardError, match="beyond the fp16 range") as e:
        bad = k.copy()
        bad[0, 1, 2, 3] = 70000
        write_card(bad, v, range(4), FP, bits=4)
    assert e.value.code == "INVALID_ARGUMENT" and "token 2, channel 11" in str(e.value)
    with pytest.raises(CardError, match="NaN"):
        bad = v.copy()
        bad[0, 0, 0, 0] = np.nan
        write_card(k, bad, range(4), FP, bits=4)
    with pytest.raises(CardError, match="invalid width|not a valid width"):
        write_card(k, v, range(4), FP, k_bits=[2, 3, 9, 4], v_bits=[2, 2, 2, 2])
    with pytest.raises(CardError, match="token ids"):
        write_card(k, v, range(5), FP, bits=4)
    with pytest.raises(CardError, match="fingerprint"):
        write_card(k, v, range(4), b"short", bits=4)
