#!/usr/bin/python3
"""Independent float64 numpy reference of a HF Llama-family forward pass.

Reads only a model directory (config.json, model.safetensors or sharded) and
prints, as JSON, the logits of every position of the given token ids:
  {"ids": [...], "logits": [[...vocab...], ...]}

Written from the Hugging Face transformers semantics (LlamaForCausalLM,
Qwen2ForCausalLM, MistralForCausalLM): RMSNorm, rotate_half RoPE with
rope_scaling null/linear/llama3, GQA (repeat_kv), q/k/v(/o) biases, SwiGLU MLP,
tied or untied head. It shares no code with the C++ runtime; it is used
offline to produce agents/testdata/numpy_reference.json
(scripts/make_numpy_reference.sh). numpy only: /usr/bin/python3.

Usage: ref_llama_numpy.py MODEL_DIR --ids 1,5,9
"""
import argparse
import json
import math
import os
import struct

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = data[b:end]
        if e["dtype"] == "F32":
            a = np.frombuffer(buf, "<f4").astype(np.float64)
        elif e["dtype"] == "F16":
            a = np.frombuffer(buf, "<f2").astype(np.float64)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError(e["dtype"])
        out[name] = a.reshape(e["shape"])
    return out


def load_weights(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    w = {}
    for shard in sorted(set(index["weight_map"].values())):
        w.update(read_safetensors(os.path.join(d, shard)))
    return w


def inv_freq(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv = inv / rs["factor"]
        elif kind == "llama3":
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            low_wl, high_wl = old / low, old / high
            out = []
            for f in inv:
                wl = 2 * math.pi / f
                if wl < high_wl:
                    out.append(f)
                elif wl > low_wl:
                    out.append(f / factor)
                else:
                    s = (old / wl - low) / (high - low)
                    out.append((1 - s) * f / factor + s * f)
            inv = np.array(out)
        elif kind != "default":
            raise ValueError(kind)
    return inv


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, cos, sin):
    # x [T, heads, d]; cos/sin [T, d/2]
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def forward(d, ids):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    W = load_weights(d)
    mt = cfg["model_type"]
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    qkv_bias = mt == "qwen2" or (mt == "llama" and cfg.get("attention_bias", False))
    o_bias = mt == "llama" and cfg.get("attention_bias", False)
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    ang = np.outer(pos, inv_freq(cfg, hd))
    cos, sin = np.cos(ang), np.sin(ang)
    mask = np.triu(np.full((T, T), -np.inf), 1)

    def lin(x, name, bias):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if bias else y

    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj", qkv_bias).reshape(T, H, hd)
        k = lin(h, p + "self_attn.k_proj", qkv_bias).reshape(T, KV, hd)
        v = lin(h, p + "self_attn.v_proj", qkv_bias).reshape(T, KV, hd)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = np.repeat(k, H // KV, axis=1)  # repeat_kv: head i uses kv head i // group
        v = np.repeat(v, H // KV, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hd)
        x = x + lin(o, p + "self_attn.o_proj", o_bias)
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, p + "mlp.gate_proj", False)
        u = lin(h, p + "mlp.up_proj", False)
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj", False)
    h = rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return h @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    a = ap.parse_args()
    ids = [int(t) for t in a.ids.split(",")]
    logits = forward(a.model_dir, ids)
    print(json.dumps({"ids": ids, "logits": [[float("%.7g" % v) for v in row] for row in logits]}))


if __name__ == "__main__":
    main()
