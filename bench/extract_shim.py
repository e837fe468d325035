"""Stand-in for `telemetryd extract --config CFG --json FILE...` until the core's CLI exists.

Templates the `message` field of each JSON line with Masker; the id is a BLAKE2b digest of the
template (no key fields, as in the Loghub benchmark). Only what bench/loghub_eval.py needs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon"))

from telemetryd.masking import Masker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["extract"])
    ap.add_argument("--config", default=None)  # the benchmark's config sets no key fields: ignored
    ap.add_argument("--json", action="store_true")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    masker = Masker()
    cache: dict[str, str] = {}
    out = sys.stdout
    for path in a.files:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
        with fh:
            for n, line in enumerate(fh, 1):
                try:
                    ev = json.loads(line)
                except ValueError:
                    out.write(json.dumps({"line": n, "skipped": "invalid_json"}) + "\n")
                    continue
                if not isinstance(ev, dict):
                    out.write(json.dumps({"line": n, "skipped": "not_object"}) + "\n")
                    continue
                msg = ev.get("message")
                text = msg if isinstance(msg, str) else json.dumps(msg)
                tpl = cache.get(text)
                if tpl is None:
                    tpl = cache[text] = masker.template(text)
                pid = hashlib.blake2b(json.dumps([{}, tpl]).encode(), digest_size=8).hexdigest()
                out.write(json.dumps({"line": n, "id": pid, "key": {}, "template": tpl}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
