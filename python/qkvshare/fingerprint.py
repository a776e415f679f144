"""The qkvshare model fingerprint (agents/model_fingerprint.h), computed in
Python exactly as the daemon does: SHA-256 over a version tag, the config
fields that decide what a KV cache means, the tokenizer.json bytes, every
tensor's name/dtype/shape and a fixed sample of every tensor's bytes.
An independent implementation of the C++ one (agents/model_fingerprint_test
checks both agree on the bundled model). Standard library only.

Usage: python3 -m qkvshare.fingerprint MODEL_DIR   (prints 64 hex digits)
"""
import hashlib
import json
import os
import struct
import sys


def num(v):
    # C's %.17g
    return "%.17g" % v


def config_text(cfg):
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rs = cfg.get("rope_scaling")
    kind = (rs or {}).get("rope_type", (rs or {}).get("type")) if rs else None
    if not rs or kind == "default":
        scaling = "none"
    elif kind == "linear":
        scaling = "linear,factor=" + num(rs["factor"])
    else:
        scaling = "llama3,factor=%s,low_freq_factor=%s,high_freq_factor=%s," \
                  "original_max_position_embeddings=%d" % (
                      num(rs["factor"]), num(rs["low_freq_factor"]), num(rs["high_freq_factor"]),
                      rs["original_max_position_embeddings"])
    return "model_type=%s;layers=%d;heads=%d;kv_heads=%d;head_dim=%d;rope_theta=%s;rope_scaling=%s" % (
        cfg["model_type"], cfg["num_hidden_layers"], heads, kv, hd,
        num(cfg.get("rope_theta", 10000.0)), scaling)


def tensors(d):
    files = ["model.safetensors"]
    if not os.path.exists(os.path.join(d, files[0])):
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for name in files:
        with open(os.path.join(d, name), "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        for k, e in header.items():
            if k != "__metadata__":
                b, end = e["data_offsets"]
                out[k] = (e["dtype"], e["shape"], raw[8 + n + b:8 + n + end])
    return out


def model_fingerprint(model_dir):
    """The model fingerprint (32 bytes) of an HF model directory."""
    d = model_dir
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    tok = b""
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        with open(os.path.join(d, "tokenizer.json"), "rb") as f:
            tok = f.read()
    h = hashlib.sha256()

    def update(b):
        h.update(struct.pack("<Q", len(b)))
        h.update(b)

    update(b"qkvshare-model-fingerprint-v1")
    update(config_text(cfg).encode())
    update(tok)
    ts = tensors(d)
    names = sorted(ts, key=lambda s: s.encode())
    for name in names:
        dtype, shape, _ = ts[name]
        update(("%s:%s:[%s]" % (name, dtype, ", ".join(str(x) for x in shape))).encode())
    for name in names:
        data = ts[name][2]
        if len(data) <= 4 * 64:
            update(data)
        else:
            last = len(data) - 64
            for w in range(4):
                off = last * w // 3
                update(data[off:off + 64])
    return h.digest()


def model_fingerprint_hex(model_dir):
    """model_fingerprint as 64 lowercase hex digits (as the daemon prints it)."""
    return model_fingerprint(model_dir).hex()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    print(model_fingerprint_hex(argv[0]))


if __name__ == "__main__":
    main()
