#!/usr/bin/env python3
"""Turn a compact corpus batch (`intent|lang|entities|text`, `#` comments) into JSONL.

The compact form is how batches are written by hand: short intent codes, `o=`, `a=`,
`p=`, `z=` for order_id, amount, phone, pincode. Usage: corpus_from_compact.py IN OUT BATCH
"""
import json
import sys

INTENT = {"os": "order_status", "co": "cancel_order", "rr": "return_request",
          "rs": "refund_status", "ac": "address_change", "rd": "reschedule_delivery",
          "th": "talk_to_human", "af": "affirm", "de": "deny", "gr": "greeting",
          "gb": "goodbye", "un": "unknown"}
LANG = {"hi": "hi", "hg": "hinglish", "en": "en"}
ENTITY = {"o": "order_id", "a": "amount", "p": "phone", "z": "pincode"}

src, dst, batch = sys.argv[1], sys.argv[2], sys.argv[3]
rows = []
for n, line in enumerate(open(src, encoding="utf-8"), 1):
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        continue
    code, lang, ents, text = line.split("|", 3)
    entities = {}
    for kv in filter(None, ents.split(";")):
        k, v = kv.split("=")
        assert v.isdigit(), f"{src}:{n}: {kv}"
        entities[ENTITY[k]] = v
    rows.append({"text": text.strip(), "lang": LANG[lang], "intent": INTENT[code],
                 "entities": entities, "batch": batch})
with open(dst, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(f"{dst}: {len(rows)}")
