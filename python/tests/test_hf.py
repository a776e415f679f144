"""The HF cache path on stories260K: daemon cards injected into a plain-torch
Llama forward in HF conventions (qkvshare.torch_llama)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import MODEL_DIR  # noqa: E402
from qkvshare import client as cl  # noqa: E402
from qkvshare.codec import Card  # noqa: E402
from qkvshare.fingerprint import model_fingerprint_hex  # noqa: E402
from qkvshare.torch_llama import TorchLlama  # noqa: E402

# Next-token logits, injected card vs a forward over the full text.
BOUNDS = {"story_full": 1e-4, "story_u8": 0.2, "story_u4": 1.0}


@pytest.fixture(scope="module")
def model():
    return TorchLlama(MODEL_DIR)


def hop_tokens(events, hop):
    return [e.id for e in events if isinstance(e, cl.Token) and e.hop == hop]


def handoff(client, story_runs, name):
    """(hop-0 card, hop-1 prompt ids after the card, the daemon's hop-1 tokens)."""
    _, events = story_runs[name]
    cards = {e.hop: e.card_id for e in events if isinstance(e, cl.CardBuilt)}
    card0 = client.cards.export(cards[0])
    ids1 = client.cards.export(cards[1]).token_ids.tolist()  # context through hop 1
    gen1 = hop_tokens(events, 1)
    t0 = card0.total_tokens
    assert ids1[:t0] == card0.token_ids.tolist()
    # ids1 = context0 + instruction + the generated tokens fed back (all but possibly the last).
    m = next(m for m in (len(gen1), len(gen1) - 1) if ids1[len(ids1) - m:] == gen1[:m])
    return card0, ids1[t0:len(ids1) - m], gen1


def continue_from(model, past, prompt, steps):
    logits, past = model.forward(prompt[:-1], past) if len(prompt) > 1 else (None, past)
    toks, first = model.greedy(prompt[-1], past, steps)
    return toks, first


@pytest.mark.parametrize("name", ["story_full", "story_u8", "story_u4"])
def test_injected_card_continues_like_the_daemon(client, story_runs, model, name):
    card, prompt, daemon_tokens = handoff(client, story_runs, name)
    past = card.to_legacy_cache()
    assert len(past) == card.num_layers
    assert tuple(past[0][0].shape) == (1, card.num_kv_heads, card.total_tokens, card.head_dim)
    toks, first = continue_from(model, past, prompt, len(daemon_tokens))
    # The full text forward, no card.
    full_logits, _ = model.forward(card.token_ids.tolist() + prompt)
    delta = float((first - full_logits[-1]).abs().max())
    print("%s: next-token max |dlogit| %.3g" % (name, delta))
    assert delta <= BOUNDS[name]
    # Greedy from the injected card = what the daemon generated after the same card.
    assert toks == daemon_tokens
    if name == "story_full":
        ref, _ = continue_from(model, None, card.token_ids.tolist() + prompt, len(daemon_tokens))
        assert toks == ref


def test_full_card_holds_the_forward_cache(client, story_runs, model):
    card, _, _ = handoff(client, story_runs, "story_full")
    _, past = model.forward(card.token_ids.tolist())
    mine = card.to_legacy_cache()
    worst = max(float((a - b).abs().max()) for la, lb in zip(past, mine) for a, b in zip(la, lb))
    assert worst <= 1e-4  # post-RoPE keys in rotate_half order, values as projected


@pytest.mark.parametrize("policy,bits", [("full", None), ("uniform", 8), ("uniform", 4)])
def test_from_past_key_values_imports(client, model, policy, bits):
    ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315]
    _, past = model.forward(ids)
    card = Card.from_past_key_values(past, ids, MODEL_DIR, bits=bits or 4, policy=policy,
                                     source_agent="hf")
    assert card.fingerprint_hex == model_fingerprint_hex(MODEL_DIR)
    kv = card.kv()
    ref = np.stack([np.stack([k[0].numpy(), v[0].numpy()]) for k, v in past])
    err = np.abs(kv - ref).max()
    assert err == 0 if policy == "full" else err <= (0.05 if bits == 8 else 0.8)
    info = client.cards.import_(card)
    assert info.context_tokens == len(ids) and info.source_agent == "hf"
    client.cards.delete(card.card_id)
    # And back: a card's legacy cache re-encodes to the same card contents.
    again = Card.from_past_key_values(card.to_legacy_cache(), ids, MODEL_DIR, policy="full")
    np.testing.assert_array_equal(again.kv(), kv)


def test_dynamic_cache_when_transformers_is_installed(client, story_runs):
    pytest.importorskip("transformers")
    card, _, _ = handoff(client, story_runs, "story_full")
    cache = card.to_dynamic_cache()
    assert cache.get_seq_length() == card.total_tokens


def test_torch_forward_matches_golden_logits(model):
    """The HF-convention forward against run.c's logits (the reference the
    daemon's runtime is tested against too)."""
    import json
    import os
    gold = os.path.join(MODEL_DIR, "golden")
    with open(os.path.join(gold, "greedy.json")) as f:
        case = json.load(f)["cases"][0]
    seq = (case["prompt_ids"] + case["generated_ids"])[:64]
    ref = np.fromfile(os.path.join(gold, "logits_full_once_upon_a_time.f32"), "<f4")
    ref = ref.reshape(200, -1)[:64]
    logits, _ = model.forward(seq)
    assert float(np.abs(logits.numpy() - ref).max()) <= 1e-4


@pytest.mark.parametrize("name,kw", [("story_full", {"mode": "full"}), ("story_u8", {"bits": 8}),
                                     ("story_u4", {"bits": 4})])
def test_python_written_card_continues_like_the_daemons(client, story_runs, model, name, kw):
    """A card written in Python from the full cache (and imported into the
    daemon) gives the same greedy tokens as the daemon's own card of that
    mode did in the daemon's next hop."""
    from qkvshare.codec import write_card
    full, prompt, _ = handoff(client, story_runs, "story_full")
    _, _, daemon_tokens = handoff(client, story_runs, name)
    kv = full.kv()
    mine = write_card(kv[:, 0], kv[:, 1], full.token_ids, model_fingerprint_hex(MODEL_DIR), **kw)
    client.cards.import_(mine)
    back = client.cards.export(mine.card_id)
    toks, _ = continue_from(model, back.to_legacy_cache(), prompt, len(daemon_tokens))
    assert toks == daemon_tokens
    client.cards.delete(mine.card_id)


def test_from_bf16_past_key_values_is_exact(model):
    ids = [1, 403, 407, 261, 378, 432]
    _, past = model.forward(ids)
    past16 = tuple((k.to(torch.bfloat16), v.to(torch.bfloat16)) for k, v in past)
    card = Card.from_past_key_values(past16, ids, MODEL_DIR, policy="full")
    assert card.source_dtype == "bf16" and card.segments[0].raw_dtype == "bf16"
    for (k, v), (ck, cv) in zip(past16, card.to_legacy_cache()):
        assert torch.equal(k.float(), ck) and torch.equal(v.float(), cv)
    with pytest.raises(ValueError):
        Card.from_past_key_values(past, ids, MODEL_DIR, policy="adaptive")
    from qkvshare.errors import CardError
    with pytest.raises(CardError, match="does not match"):
        Card.from_past_key_values(past[:-1], ids, MODEL_DIR)


@pytest.mark.parametrize("api", ["update", "from_legacy_cache"])
def test_dynamic_cache_picks_the_installed_api(monkeypatch, api):
    """transformers is not in Debian 12: a stand-in module with either cache
    API checks which one to_dynamic_cache uses and what it passes."""
    import sys
    import types
    from qkvshare.codec import write_card
    calls = []

    class DynamicCache:
        if api == "update":
            def update(self, k, v, layer):
                calls.append((layer, k, v))
        else:
            @classmethod
            def from_legacy_cache(cls, legacy):
                calls.extend((i, k, v) for i, (k, v) in enumerate(legacy))
                return cls()

    monkeypatch.setitem(sys.modules, "transformers",
                        types.SimpleNamespace(DynamicCache=DynamicCache))
    rng = np.random.default_rng(2)
    k = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)
    card = write_card(k, -k, range(5), bytes(32), mode="full")
    cache = card.to_dynamic_cache()
    assert isinstance(cache, DynamicCache)
    assert [c[0] for c in calls] == [0, 1, 2]
    for layer, kk, vv in calls:
        assert tuple(kk.shape) == (1, 2, 5, 4)
        np.testing.assert_array_equal(kk[0].numpy(), k[layer])
        np.testing.assert_array_equal(vv[0].numpy(), -k[layer])
