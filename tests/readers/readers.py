#!/usr/bin/python3
"""The Python half of the reader panel (tests/readers.rs): how Python's email package reads a
From header, both as policy.default parses it and as the legacy helpers (parseaddr and
getaddresses with strict=False, then decode_header/make_header on the name, as many list
servers and DMARC tools do). Input: JSON lines {"id": N, "value": "..."} on stdin. Output:
one JSON line per input and reader: {"id", "reader", "mailboxes": [{"name", "address"}],
"error"}."""
import email
import email.header
import email.policy
import email.utils
import json
import re
import sys


def decoded(name):
    try:
        return str(email.header.make_header(email.header.decode_header(name)))
    except Exception:
        return name


def policy_default(value):
    msg = email.message_from_bytes(
        ("From: " + value + "\r\n\r\nbody\r\n").encode("utf-8"), policy=email.policy.default
    )
    header = msg["From"]
    return [{"name": a.display_name, "address": a.addr_spec} for a in header.addresses]


def parseaddr(value):
    name, address = email.utils.parseaddr(unfold(value), strict=False)
    return [{"name": decoded(name), "address": address}]


def getaddresses(value):
    return [
        {"name": decoded(name), "address": address}
        for name, address in email.utils.getaddresses([unfold(value)], strict=False)
    ]


def clean(text):
    """Text as JSON can carry it (lone surrogates from undecodable bytes become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


def unfold(value):
    return re.sub(r"\r?\n(?=[ \t])", "", value)


READERS = {
    "python-default": policy_default,
    "python-parseaddr": parseaddr,
    "python-getaddresses": getaddresses,
}

for line in sys.stdin:
    if not line.strip():
        continue
    case = json.loads(line)
    for reader, read in READERS.items():
        try:
            mailboxes = [
                {"name": clean(m["name"]), "address": clean(m["address"])}
                for m in read(case["value"])
            ]
            result = {"mailboxes": mailboxes, "error": None}
        except Exception as e:  # a reader that cannot parse shows nothing
            result = {"mailboxes": [], "error": repr(e)}
        result.update(id=case["id"], reader=reader)
        sys.stdout.write(json.dumps(result) + "\n")
