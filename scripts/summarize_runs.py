#!/usr/bin/env python3
"""Markdown table (mean ± std over seeds, in %) from run folders named <row>-s<seed>/summary.json."""
import json, pathlib, re, statistics, sys

COLUMNS = {  # task -> [(task index, metric, header)]
    "multimnist": [(0, "acc", "task 1 (left) acc"), (1, "acc", "task 2 (right) acc")],
    "fundus": [(0, "dice_disc", "disc Dice"), (0, "dice_cup", "cup Dice"), (1, "acc", "glaucoma Acc"),
               (1, "auroc", "AUROC"), (1, "sensitivity", "Sen"), (1, "specificity", "Spe")],
    "fundus-av": [(0, "dice_artery", "artery F1"), (0, "acc_artery", "artery Acc"), (0, "dice_vein", "vein F1"),
                  (0, "acc_vein", "vein Acc"), (1, "dice_vessel", "vessel F1"), (1, "acc_vessel", "vessel Acc")],
}

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/table")
rows = {}
for s in sorted(root.glob("*/summary.json")):
    rows.setdefault(re.sub(r"-s\d+$", "", s.parent.name), []).append(json.loads(s.read_text()))
if not rows:
    sys.exit(f"no runs under {root}")

def metric(run, t, key):
    if "metrics" in run:
        return run["metrics"][t].get(key, float("nan"))
    return run["test_acc"][t]  # runs written before per-task metric maps existed

def ms(xs):
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f} ± {sd:.2f}"

task = next(iter(rows.values()))[0].get("task", "multimnist")
cols = COLUMNS[task]
print("| method | " + " | ".join(h + " %" for _, _, h in cols) + " | params | seeds | epochs | s/run |")
print("|---|" + "---|" * (len(cols) + 4))
for name, runs in rows.items():
    cells = [ms([metric(r, t, k) for r in runs]) for t, k, _ in cols]
    secs = statistics.mean(r["seconds"] for r in runs)
    print(f"| {name} | " + " | ".join(cells) + f" | {runs[0]['param_count']} | {len(runs)} | {runs[0]['epochs']} | {secs:.0f} |")
