#!/usr/bin/env python3
"""Groups a dhat heap profile's bytes at the heap's peak (t-gmax) by what allocated them.

Usage: scripts/dhat_summary.py dhat-heap.json CALLS [--sites]

Each allocation site is charged to the first frame of its backtrace that names a part of a
call (a ring, a resampler, the VAD, a WebSocket, ...), else to the first frame in caly.
Prints bytes at the peak, and per call for CALLS concurrent calls.
"""
import json
import re
import sys

# (label, pattern on a frame), first match wins; most specific first.
PARTS = [
    ("ring buffers between stages", r"caly::engine::ring"),
    ("resampler (rubato)", r"rubato|caly::stages::resample"),
    ("VAD", r"caly::stages::vad|silero|earshot"),
    ("Exotel WebSocket", r"caly::transport::exotel|axum::extract::ws"),
    ("model WebSocket (tungstenite)", r"tungstenite"),
    ("realtime stage", r"caly::stages::realtime"),
    ("call playout queue", r"caly::call::playout"),
    ("call controller", r"caly::call::"),
    ("pipeline and edges", r"caly::engine::"),
    ("intent stage", r"caly::stages::classify_intent|caly::intent"),
    ("agents", r"caly::stages::agent|caly::commerce"),
    ("call records", r"caly::store"),
    ("JSON", r"serde_json"),
    ("tokio (tasks, timers, I/O)", r"tokio::"),
    ("hyper", r"hyper"),
    ("sqlx", r"sqlx"),
]


def main() -> None:
    path, calls = sys.argv[1], int(sys.argv[2])
    with open(path, encoding="utf-8") as f:
        prof = json.load(f)
    frames = prof["ftbl"]
    compiled = [(label, re.compile(p)) for label, p in PARTS]
    totals: dict[str, int] = {}
    sites: dict[tuple[str, str], int] = {}
    for pp in prof["pps"]:
        at_peak = pp.get("gb", 0)
        if not at_peak:
            continue
        label = None
        for index in pp["fs"]:
            frame = frames[index]
            label = next((name for name, rx in compiled if rx.search(frame)), None)
            if label:
                break
        if label is None:
            caly = next((frames[i] for i in pp["fs"] if "caly::" in frames[i]), None)
            label = "other (caly)" if caly else "other"
        totals[label] = totals.get(label, 0) + at_peak
        site = next((frames[i] for i in pp["fs"] if "caly::" in frames[i]), frames[pp["fs"][0]] if pp["fs"] else "?")
        site = re.sub(r"^0x[0-9a-f]+: ", "", site)
        sites[(label, site)] = sites.get((label, site), 0) + at_peak
    peak = sum(totals.values())
    print(f"heap at its peak: {peak / 1024:.0f} KiB over {calls} calls "
          f"({peak / 1024 / calls:.1f} KiB per call)")
    print(f"{'part':<34} {'KiB at peak':>12} {'KiB per call':>13}")
    for label, n in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{label:<34} {n / 1024:>12.0f} {n / 1024 / calls:>13.1f}")
    if "--sites" in sys.argv:
        print("\nlargest allocation sites (innermost caly frame), KiB per call:")
        for (label, site), n in sorted(sites.items(), key=lambda kv: -kv[1])[:25]:
            print(f"{n / 1024 / calls:>8.1f}  {label:<28} {site[:150]}")


if __name__ == "__main__":
    main()
