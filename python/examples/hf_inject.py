#!/usr/bin/python3
"""Exports a card from a running qkvshared and injects it into a plain-torch
Llama forward of the same HF checkpoint (HF conventions: legacy cache of
(k, v) [1, kv_heads, T, head_dim], post-RoPE keys in rotate_half order).

    python/examples/hf_inject.py --addr unix:///tmp/q.sock --model models/stories260K \
        [--workflow story] [--input TEXT] [--mode full|card] [--bits B] [--card ID] [--steps 32]

Without --card it runs the workflow and takes the card hop 1 built. It then
feeds a cue (" The next day,") after the card and prints the next-token
logits' max |delta| against a forward over the full text, and both greedy
continuations.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from qkvshare import Client  # noqa: E402
from qkvshare.client import CardBuilt  # noqa: E402
from qkvshare.torch_llama import TorchLlama  # noqa: E402


def detok(model_dir, ids):
    """Token ids -> text through tokenizer.json's vocab (byte-level pieces
    and SentencePiece '▁' spaces; enough for printing)."""
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        vocab = {i: p for p, i in json.load(f)["model"]["vocab"].items()}
    out = []
    for i in ids:
        p = vocab.get(i, "?")
        if p.startswith("<0x") and p.endswith(">"):
            out.append(chr(int(p[3:-1], 16)))
        else:
            out.append(p.replace("\u2581", " "))
    return "".join(out)


def encode_cue(model_dir, text):
    """Greedy longest-match of `text` over the vocab (a cue only needs some
    valid ids; the daemon's tokenizer is not needed for the comparison)."""
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        vocab = json.load(f)["model"]["vocab"]
    s, ids = text.replace(" ", "\u2581"), []
    while s:
        for n in range(len(s), 0, -1):
            if s[:n] in vocab:
                ids.append(vocab[s[:n]])
                s = s[n:]
                break
        else:
            s = s[1:]
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="unix:///run/qkvshare/qkvshared.sock")
    ap.add_argument("--model", required=True, help="the HF checkpoint directory the daemon serves")
    ap.add_argument("--workflow", default="story")
    ap.add_argument("--input", default="Once upon a time, there was a little girl named Lily.")
    ap.add_argument("--mode", choices=["card", "full"], help="override the workflow's handoff mode")
    ap.add_argument("--bits", type=float, help="override the workflow's card bits (2..8, 16)")
    ap.add_argument("--card", help="a card id in the daemon's store (default: run the workflow)")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    with Client(args.addr) as c:
        c.wait_ready()
        card_id = args.card
        if not card_id:
            tid = c.submit(args.workflow, args.input, mode=args.mode, bits=args.bits)
            card_id = next(e.card_id for e in c.watch(tid) if isinstance(e, CardBuilt))
        card = c.cards.export(card_id)
    print(card)
    model = TorchLlama(args.model)
    cue = encode_cue(args.model, " The next day,")
    ctx = card.token_ids.tolist()

    past = card.to_legacy_cache()
    _, past = model.forward(cue[:-1], past)
    inj_tokens, inj_logits = model.greedy(cue[-1], past, args.steps)

    _, past_full = model.forward(ctx + cue[:-1])
    full_tokens, full_logits = model.greedy(cue[-1], past_full, args.steps)

    delta = float((inj_logits - full_logits).abs().max())
    print("card: %d tokens, %s, %.2f bits/element" % (card.total_tokens, card.mode, card.avg_bits))
    print("next-token logits max |delta| (card vs full text): %.3g" % delta)
    print("greedy from the card:     %r" % detok(args.model, inj_tokens))
    print("greedy from the full text: %r" % detok(args.model, full_tokens))
    print("identical continuation:", inj_tokens == full_tokens)


if __name__ == "__main__":
    main()
