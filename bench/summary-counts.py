#!/usr/bin/env python3
"""Prints `emitted dropped throttled` of one event kind from an osprey stderr log: the JSON exit
summary ({"kind":"summary",...,"events":[...]}, under --output json) or the aligned table.
`? ? ?` when the log has neither.

    bench/summary-counts.py LOG [CAPABILITY KIND]      (default: files file_open)
"""
import json
import sys

log = sys.argv[1]
capability, kind = (sys.argv[2:4] + ["files", "file_open"][len(sys.argv[2:4]):])[:2]
found = None
for line in open(log, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            summary = json.loads(line)
        except ValueError:
            continue
        for k in summary.get("events", []):
            if k.get("capability") == capability and k.get("kind") == kind:
                found = (k["emitted"], k["dropped"], k["throttled"])
    else:
        f = line.split()
        if len(f) >= 5 and f[0] == capability and f[1] == kind and f[2].isdigit():
            found = tuple(f[2:5])
print(*(found or ("?", "?", "?")))
