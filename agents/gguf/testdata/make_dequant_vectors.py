#!/usr/bin/env python3
"""Writes dequant_vectors.gguf: for each block type the loader decodes, a
tensor "<type>" of random blocks (2 rows of 2 blocks; fp16 scales drawn in
[-1, 1]) and "<type>.expected", its values as decoded by llama.cpp's gguf-py
(gguf.quants.dequantize), F32. agents/gguf:gguf_dequant_test compares the
C++ decoders with them.

Usage: PYTHONPATH=.../llama.cpp/gguf-py make_dequant_vectors.py OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# type -> byte offsets of the fp16 scale fields in one block
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

rng = np.random.default_rng(2024)
w = gguf.GGUFWriter(sys.argv[1], "test")
for t, offsets in SCALES.items():
    block, nbytes = gguf.GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(2, 2 * nbytes), dtype=np.uint8)
    for row in range(2):
        for b in range(2):
            for o in offsets:
                h = np.array([rng.uniform(-1, 1)], dtype=np.float16).view(np.uint8)
                raw[row, b * nbytes + o:b * nbytes + o + 2] = h
    name = t.name.lower()
    w.add_tensor(name, raw, raw_dtype=t)
    w.add_tensor(name + ".expected", dequantize(raw, t).astype(np.float32))
for t, dt in ((T.F16, np.float16), (T.BF16, None)):
    x = rng.uniform(-3, 3, size=(2, 8)).astype(np.float32)
    if dt is not None:
        w.add_tensor("f16", x.astype(np.float16))
        w.add_tensor("f16.expected", x.astype(np.float16).astype(np.float32))
    else:
        bits = (x.view(np.uint32) >> 16).astype(np.uint16)
        w.add_tensor("bf16", bits.view(np.uint8).reshape(2, 16), raw_dtype=T.BF16)
        w.add_tensor("bf16.expected", (bits.astype(np.uint32) << 16).view(np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", sys.argv[1])
