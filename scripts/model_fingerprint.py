#!/usr/bin/env python3
"""Independent implementation of the qkvshare model fingerprint
(agents/model_fingerprint.h) for cross-checking: prints the 64-hex SHA-256.
The implementation is the Python SDK's (python/qkvshare/fingerprint.py).

Usage: model_fingerprint.py MODEL_DIR    (standard library only)
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from qkvshare.fingerprint import main  # noqa: E402

if __name__ == "__main__":
    main()
