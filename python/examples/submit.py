#!/usr/bin/python3
"""Runs a workflow on a running qkvshared and streams its tokens.

    python/examples/submit.py --addr unix:///tmp/q.sock [--workflow story] [--input TEXT]

Prints each hop's tokens as they come, then per-hop handoff statistics
(mode, card bytes, average bits, build/inject ms, TTFT).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from qkvshare import Client  # noqa: E402
from qkvshare.client import HopStarted, TaskEnded, Token  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="unix:///run/qkvshare/qkvshared.sock")
    ap.add_argument("--workflow", default="story")
    ap.add_argument("--input", default="Once upon a time, there was a little girl named Lily.")
    ap.add_argument("--bits", type=float, help="override every hop's card bits")
    args = ap.parse_args()
    with Client(args.addr) as c:
        c.wait_ready()
        tid = c.submit(args.workflow, args.input, bits=args.bits)
        print("task", tid)
        for ev in c.watch(tid):
            if isinstance(ev, HopStarted):
                print("\n--- hop %d/%d (%s) ---" % (ev.hop + 1, ev.num_hops, ev.agent))
            elif isinstance(ev, Token):
                print(ev.text, end="", flush=True)
            elif isinstance(ev, TaskEnded):
                print("\n\ntask %s%s" % (ev.state, (": " + ev.reason) if ev.reason else ""))
        task = c.get(tid)
        for hop in task.hops:
            h = hop.handoff_in
            print("hop %d: ttft %.1f ms, %d tokens at %.0f tok/s" % (
                hop.index + 1, hop.ttft_ms, hop.generated_tokens, hop.decode_tokens_per_s), end="")
            if h.card_id:
                print(", card %s: %d B, %.2f bits, build %.2f ms, inject %.2f ms" % (
                    h.card_id[:8], h.card_bytes, h.avg_bits, h.build_ms, h.inject_ms), end="")
            print()
        return 0 if c.state_name(task) == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
