"""A plain-torch Llama-family forward in Hugging Face conventions, for the
HF cache path (examples/hf_inject.py, tests): what transformers'
LlamaForCausalLM computes, without transformers (not a Debian 12 package).

Semantics: RMSNorm in float32, rotate_half RoPE (rope_scaling none, linear,
llama3), GQA via repeat_kv, optional q/k/v biases (qwen2, attention_bias),
SwiGLU MLP, tied or untied head. The KV cache is HF's legacy format: a tuple
per layer of (k, v), each [1, num_kv_heads, T, head_dim], keys post-RoPE --
exactly what `Card.to_legacy_cache()` returns.

    m = TorchLlama("models/stories260K")
    logits, past = m.forward(ids)                 # prefill
    logits, past = m.forward([next_id], past)     # one decode step
"""
import json
import math
import os

import numpy as np
import torch

from .fingerprint import tensors as _read_tensors

_NP_DTYPES = {"F32": "<f4", "F16": "<f2"}


def _to_torch(dtype, shape, data):
    if dtype == "BF16":
        a = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(data, _NP_DTYPES[dtype]).astype(np.float32)
    return torch.from_numpy(a.reshape(shape).copy())


def _inv_freq(cfg, head_dim):
    base = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    if not rs or kind == "default":
        return inv
    if kind == "linear":
        return inv / float(rs["factor"])
    if kind == "llama3":
        factor, low, high = float(rs["factor"]), float(rs["low_freq_factor"]), \
            float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return torch.where(medium, smoothed, out)
    raise NotImplementedError("rope_scaling type %r" % kind)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class TorchLlama:
    """Weights of an HF Llama/Qwen2/Mistral checkpoint directory, float32."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.config = cfg
        self.num_layers = cfg["num_hidden_layers"]
        self.num_heads = cfg["num_attention_heads"]
        self.num_kv_heads = cfg.get("num_key_value_heads") or self.num_heads
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.num_heads
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.w = {k: _to_torch(*v) for k, v in _read_tensors(model_dir).items()}
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        self.inv_freq = _inv_freq(cfg, self.head_dim)

    def _norm(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.eps))

    def _lin(self, x, name):
        y = torch.nn.functional.linear(x, self.w[name + ".weight"])
        b = self.w.get(name + ".bias")
        return y + b if b is not None else y

    @torch.no_grad()
    def forward(self, ids, past_key_values=None):
        """Logits [len(ids), vocab] (float32) of the new tokens and the
        updated legacy cache. ids continue at position len(past)."""
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        n = ids.numel()
        start = 0 if not past_key_values else past_key_values[0][0].shape[2]
        pos = torch.arange(start, start + n, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.w["model.embed_tokens.weight"][ids]
        total = start + n
        mask = torch.full((n, total), float("-inf")).triu(start + 1)
        rep = self.num_heads // self.num_kv_heads
        new_past = []
        for layer in range(self.num_layers):
            p = "model.layers.%d." % layer
            h = self._norm(x, self.w[p + "input_layernorm.weight"])
            q = self._lin(h, p + "self_attn.q_proj").view(n, self.num_heads, self.head_dim)
            k = self._lin(h, p + "self_attn.k_proj").view(n, self.num_kv_heads, self.head_dim)
            v = self._lin(h, p + "self_attn.v_proj").view(n, self.num_kv_heads, self.head_dim)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, n, hd]
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if past_key_values:
                pk, pv = past_key_values[layer]
                k = torch.cat((pk[0].to(k.dtype), k), dim=1)
                v = torch.cat((pv[0].to(v.dtype), v), dim=1)
            new_past.append((k[None], v[None]))
            kr = k.repeat_interleave(rep, dim=0)
            vr = v.repeat_interleave(rep, dim=0)
            att = torch.matmul(q, kr.transpose(1, 2)) / math.sqrt(self.head_dim) + mask
            att = torch.softmax(att, dim=-1)
            o = torch.matmul(att, vr).transpose(0, 1).reshape(n, self.num_heads * self.head_dim)
            x = x + self._lin(o, p + "self_attn.o_proj")
            h = self._norm(x, self.w[p + "post_attention_layernorm.weight"])
            g = torch.nn.functional.silu(self._lin(h, p + "mlp.gate_proj"))
            x = x + self._lin(g * self._lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        x = self._norm(x, self.w["model.norm.weight"])
        return torch.nn.functional.linear(x, self.lm_head), tuple(new_past)

    def greedy(self, last_id, past_key_values, steps, eos_id=None):
        """Greedy continuation: feeds `last_id` at position len(past), then
        its argmax, `steps` times in all. Returns (token ids, logits of the
        first step [vocab])."""
        out, first_logits = [], None
        tok, past = last_id, past_key_values
        for _ in range(steps):
            logits, past = self.forward([tok], past)
            if first_logits is None:
                first_logits = logits[-1]
            tok = int(torch.argmax(logits[-1]))
            out.append(tok)
            if eos_id is not None and tok == eos_id:
                break
        return out, first_logits
