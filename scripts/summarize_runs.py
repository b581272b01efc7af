#!/usr/bin/env python3
"""Markdown table (mean ± std over seeds) from run folders named <row>-s<seed>/summary.json."""
import json, pathlib, re, statistics, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/table")
rows = {}
for s in sorted(root.glob("*/summary.json")):
    name = re.sub(r"-s\d+$", "", s.parent.name)
    rows.setdefault(name, []).append(json.loads(s.read_text()))

def ms(xs):
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f} ± {sd:.2f}"

print("| method | task 1 (left) acc % | task 2 (right) acc % | params | seeds | epochs | s/run |")
print("|---|---|---|---|---|---|---|")
for name, runs in rows.items():
    acc = [[r["test_acc"][t] for r in runs] for t in (0, 1)]
    secs = statistics.mean(r["seconds"] for r in runs)
    print(f"| {name} | {ms(acc[0])} | {ms(acc[1])} | {runs[0]['param_count']} | {len(runs)} | "
          f"{runs[0]['epochs']} | {secs:.0f} |")
