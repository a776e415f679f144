#!/usr/bin/env python3
"""HF Llama directory (F32/F16/BF16 safetensors + a SentencePiece-style BPE
tokenizer.json) -> GGUF F32, with the real vocabulary (tokenizer.ggml.model
"llama": tokens, scores, token types, bos/eos/unk ids), as llama.cpp's
convert_hf_to_gguf.py writes a SentencePiece model.

Needs numpy and llama.cpp's gguf-py (PYTHONPATH=.../llama.cpp/gguf-py).
Scores: `--scores tok512.bin` reads the llama2.c tokenizer export (the real
SentencePiece scores); without it, score = -(merge rank of the piece) for
merged pieces and 0 for the others, which orders merges the same way.

Usage: hf_llama_to_gguf_spm.py HF_DIR OUT.gguf [--scores TOK.bin]
"""
import argparse
import json
import os
import struct

import numpy as np
import gguf


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[base + a:base + b]
        dt = v["dtype"]
        if dt == "F32":
            arr = raw.view(np.float32)
        elif dt == "F16":
            arr = raw.view(np.float16).astype(np.float32)
        elif dt == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit("unsupported dtype " + dt)
        out[k] = np.array(arr.reshape(v["shape"]), dtype=np.float32)
    return out


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half rows -> GGUF pairs.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama2c_scores(path, n):
    b = open(path, "rb").read()
    o = 4
    scores = []
    for _ in range(n):
        s, length = struct.unpack_from("<fi", b, o)
        o += 8 + length
        scores.append(s)
    return scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--scores")
    ap.add_argument("--arch", default="llama", choices=["llama", "qwen2"],
                    help="qwen2: as convert_hf_to_gguf.py writes Qwen2 (no q/k permutation, "
                         "q/k/v biases; zero biases when the checkpoint has none)")
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.src, "config.json")))
    tok = json.load(open(os.path.join(args.src, "tokenizer.json")))
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    hid = cfg["hidden_size"]
    head_dim = cfg.get("head_dim", hid // n_head)
    n_layer = cfg["num_hidden_layers"]
    vocab = tok["model"]["vocab"]
    n_vocab = cfg["vocab_size"]
    assert len(vocab) == n_vocab, (len(vocab), n_vocab)

    pieces = [None] * n_vocab
    for p, i in vocab.items():
        pieces[i] = p
    if args.scores:
        scores = llama2c_scores(args.scores, n_vocab)
    else:
        rank = {"".join(m.split(" ") if isinstance(m, str) else m): r
                for r, m in enumerate(tok["model"]["merges"])}
        scores = [-float(rank[p]) if p in rank else 0.0 for p in pieces]
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    unk = tok["model"].get("unk_token")
    types = []
    for i, p in enumerate(pieces):
        if p == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in special:
            types.append(gguf.TokenType.CONTROL)
        elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)

    T = read_safetensors(os.path.join(args.src, "model.safetensors"))
    w = gguf.GGUFWriter(args.out, args.arch)
    w.add_name(cfg.get("_name_or_path", "llama"))
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(hid)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p.encode("utf-8") for p in pieces])
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(cfg.get("bos_token_id", 1))
    eos = cfg.get("eos_token_id", 2)
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)
    if unk is not None:
        w.add_unk_token_id(vocab[unk])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    w.add_tensor("token_embd.weight", T["model.embed_tokens.weight"])
    for i in range(n_layer):
        p, b = "model.layers.%d." % i, "blk.%d." % i
        w.add_tensor(b + "attn_norm.weight", T[p + "input_layernorm.weight"])
        q, k = T[p + "self_attn.q_proj.weight"], T[p + "self_attn.k_proj.weight"]
        if args.arch == "llama":
            q, k = permute(q, n_head, n_head), permute(k, n_head, n_kv)
        w.add_tensor(b + "attn_q.weight", q)
        w.add_tensor(b + "attn_k.weight", k)
        if args.arch == "qwen2":
            for name, rows in (("q", q.shape[0]), ("k", k.shape[0]), ("v", k.shape[0])):
                bias = T.get(p + "self_attn.%s_proj.bias" % name, np.zeros(rows, np.float32))
                w.add_tensor(b + "attn_%s.bias" % name, bias)
        w.add_tensor(b + "attn_v.weight", T[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", T[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", T[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", T[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", T[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", T[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", T["model.norm.weight"])
    if not cfg.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", T["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
