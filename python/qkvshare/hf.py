"""Hugging Face cache adapters: CacheCards <-> transformers' KV caches.

- `to_legacy_cache(card)`: a tuple per layer of (k, v) torch tensors
  [1, num_kv_heads, T, head_dim], keys post-RoPE in rotate_half order, as
  transformers' Llama/Qwen2/Mistral caches hold them.
- `to_dynamic_cache(card)`: a transformers DynamicCache (needs transformers;
  built with the installed version's API: `DynamicCache.update` per layer
  where the class has it, else the older `DynamicCache.from_legacy_cache`).
- `card_from_past_key_values(...)`: a transformers agent's context as a card
  for the daemon (the model fingerprint computed from `model_dir`).

torch is imported by this module only; the codec and client need numpy alone.
"""
import json
import os

import numpy as np
import torch

from .codec import write_card
from .errors import CardError
from .fingerprint import model_fingerprint


def to_legacy_cache(card, dtype=None, device=None):
    """Dequantized K/V of a self-contained card as the legacy HF cache:
    tuple over layers of (k, v), each [1, num_kv_heads, T, head_dim]
    (float32, or `dtype`). Raises CardError for an incremental card
    (first_token > 0): export it from the daemon, which flattens chains."""
    if card.first_token != 0:
        raise CardError("to_legacy_cache needs a self-contained card (first_token 0), this one "
                        "starts at %d: export the chain from the daemon (it flattens)"
                        % card.first_token, "INVALID_ARGUMENT")
    kv = torch.from_numpy(card.kv())
    if dtype is not None or device is not None:
        kv = kv.to(dtype=dtype or kv.dtype, device=device)
    return tuple((kv[layer, 0][None], kv[layer, 1][None]) for layer in range(card.num_layers))


def to_dynamic_cache(card, dtype=None, device=None):
    """The card as a transformers DynamicCache (ImportError without transformers)."""
    try:
        from transformers import DynamicCache
    except ImportError as e:
        raise ImportError("to_dynamic_cache needs the transformers package; "
                          "use to_legacy_cache() without it") from e
    legacy = to_legacy_cache(card, dtype=dtype, device=device)
    if hasattr(DynamicCache, "update"):
        cache = DynamicCache()
        for layer, (k, v) in enumerate(legacy):
            cache.update(k, v, layer)
        return cache
    return DynamicCache.from_legacy_cache(legacy)


def _legacy_layers(past_key_values):
    pkv = past_key_values
    if hasattr(pkv, "layers") and pkv.layers and hasattr(pkv.layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in pkv.layers]
    if hasattr(pkv, "key_cache") and hasattr(pkv, "value_cache"):
        return list(zip(pkv.key_cache, pkv.value_cache))
    if hasattr(pkv, "to_legacy_cache"):
        return list(pkv.to_legacy_cache())
    return list(pkv)


def card_from_past_key_values(past_key_values, token_ids, model_dir, bits=4, policy="uniform",
                              k_bits=None, v_bits=None, **kwargs):
    """A card of a transformers agent's context, ready for the daemon's import.

    past_key_values: legacy tuple of (k, v) [1, kv_heads, T, head_dim] or a
    DynamicCache; token_ids: the T ids it holds; model_dir: the HF checkpoint
    (for the fingerprint and shape check). policy: "uniform" (at `bits`),
    "full" (unquantized, the tensors' dtype f32/f16), or "adaptive" with
    caller-given per-token k_bits/v_bits. The card's source_dtype (and a
    full card's element type) is the tensors' dtype: f32, f16 or bf16.
    Other kwargs go to write_card.
    Raises CardError for shapes that do not match the model, ValueError for
    a bad policy."""
    layers = _legacy_layers(past_key_values)
    k = torch.stack([kk for kk, _ in layers]).detach().cpu()
    v = torch.stack([vv for _, vv in layers]).detach().cpu()
    if k.dim() != 5 or k.shape[1] != 1:
        raise CardError("past_key_values must hold batch size 1 tensors [1, kv_heads, T, head_dim]",
                        "INVALID_ARGUMENT")
    k, v = k[:, 0], v[:, 0]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    want = (cfg["num_hidden_layers"], heads, hd)
    if (k.shape[0], k.shape[1], k.shape[3]) != want:
        raise CardError("past_key_values shape %s does not match the model's (layers, kv_heads, "
                        "head_dim) %s" % (tuple(k.shape), want), "INVALID_ARGUMENT")
    fp = model_fingerprint(model_dir)
    src = {torch.float16: "f16", torch.bfloat16: "bf16"}.get(k.dtype, "f32")
    kwargs.setdefault("source_dtype", src)
    if policy == "full":  # in the tensors' own dtype (bf16 widens to f32 exactly)
        dt = torch.float16 if k.dtype == torch.float16 else torch.float32
        return write_card(k.to(dt).numpy(), v.to(dt).numpy(), token_ids, fp, mode="full",
                          raw_dtype=src, **kwargs)
    kn = k.to(torch.float32).numpy()
    vn = v.to(torch.float32).numpy()
    if policy == "uniform":
        return write_card(kn, vn, token_ids, fp, mode="quantized", bits=bits, **kwargs)
    if policy == "adaptive":
        if k_bits is None or v_bits is None:
            raise ValueError("policy 'adaptive' needs per-token k_bits and v_bits (the plan)")
        return write_card(kn, vn, token_ids, fp, mode="quantized", k_bits=np.asarray(k_bits),
                          v_bits=np.asarray(v_bits), **kwargs)
    raise ValueError("policy must be 'uniform', 'full' or 'adaptive', got %r" % (policy,))
