#!/usr/bin/python3
"""dkimpy's relaxed header canonicalization, the reference for tests/canonicalization.rs.

Input lines: NAME_HEX VALUE_HEX (the value as it stands in the message, CRLF folds).
Output lines: the hex of dkimpy's canonical `name:value` without the line end."""
import sys

from dkim.canonicalization import Relaxed

for line in sys.stdin:
    name, value = (bytes.fromhex(part) for part in line.split())
    [(n, v)] = Relaxed.canonicalize_headers([(name, value)])
    sys.stdout.write((n + b":" + v[:-2]).hex() + "\n")
