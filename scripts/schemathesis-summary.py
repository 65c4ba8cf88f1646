"""Counts the status codes each operation of an OpenAPI document answered in HAR recordings.

usage: schemathesis-summary.py openapi.json recording.har...
"""

import collections
import json
import re
import sys
import urllib.parse


def operations(doc):
    """(METHOD, template, compiled pattern) for every operation of the document."""
    for path, item in doc["paths"].items():
        parts = re.split(r"(\{[^/}]+\})", path)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        for method in item:
            yield method.upper(), path, re.compile(f"^{pattern}$")


def main():
    doc = json.load(open(sys.argv[1]))
    routes = list(operations(doc))
    counts = collections.defaultdict(collections.Counter)
    for har in sys.argv[2:]:
        try:
            entries = json.load(open(har))["log"]["entries"]
        except (OSError, ValueError, KeyError):
            continue
        for entry in entries:
            method = entry["request"]["method"]
            path = urllib.parse.urlsplit(entry["request"]["url"]).path
            template = next((t for m, t, p in routes if m == method and p.match(path)), None)
            if template is None:
                # Methods the document does not list on a path (the coverage phase tries them).
                method, template = "*", "(undocumented methods)"
            counts[(method, template)][entry["response"]["status"]] += 1
    print(f"{'operation':<64} {'requests':>8}  statuses")
    total = 0
    for (method, path), statuses in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n = sum(statuses.values())
        total += n
        shown = " ".join(f"{code}x{count}" for code, count in sorted(statuses.items()))
        print(f"{method + ' ' + path:<64} {n:>8}  {shown}")
    never = sorted({(m, t) for m, t, _ in routes} - set(counts))
    total_ops = sum(1 for m, _ in counts if m != "*")
    print(f"{total} requests over {total_ops} operations; never called: {never or 'none'}")


if __name__ == "__main__":
    main()
