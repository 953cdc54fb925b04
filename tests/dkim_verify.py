#!/usr/bin/python3
"""Independent DKIM verification with dkimpy (Debian python3-dkim + python3-nacl).

Usage: dkim_verify.py RECORDS MESSAGE...
RECORDS holds lines `selector._domainkey.domain.<TAB>TXT value`; no DNS is queried.
Prints one line per message: `ok N` (all N signatures verify) or `FAIL ...`.
With DKIM_VERIFY_AT=UNIX_SECONDS in the environment, verifies as at that moment (t= and
x= are judged against it), for tests that run on a simulated clock.
"""
import os
import sys
import time

import dkim

if "DKIM_VERIFY_AT" in os.environ:
    _at = float(os.environ["DKIM_VERIFY_AT"])
    time.time = lambda: _at


def main():
    records = {}
    with open(sys.argv[1], encoding="ascii") as f:
        for line in f:
            name, value = line.rstrip("\n").split("\t", 1)
            records[name.lower()] = value.encode("ascii")

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        name = name.lower()
        if not name.endswith("."):
            name += "."
        return records.get(name)

    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            message = f.read()
        d = dkim.DKIM(message)
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        failures = []
        for idx in range(count):
            try:
                if not d.verify(idx=idx, dnsfunc=dnsfunc):
                    failures.append(f"signature {idx} does not verify")
            except Exception as e:  # dkimpy raises on malformed signatures
                failures.append(f"signature {idx}: {e}")
        if count == 0:
            failures.append("no DKIM-Signature")
        print(f"{path} " + (f"ok {count}" if not failures else "FAIL " + "; ".join(failures)))


if __name__ == "__main__":
    main()
