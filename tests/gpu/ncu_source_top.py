#!/usr/bin/env python3
"""Top source lines (or SASS instructions) of an Nsight Compute source-page CSV export.

Usage: ncu_source_top.py FILE.csv [FILE.csv ...]
Each file is `ncu --import R --page source --csv --print-source cuda|sass` output. Prints, for each
file, the rows with the most instructions executed and the most warp-stall samples, with the
share of the total, so that a profile's hot spots can be read from a log (tests/gpu/run.sh profile).
"""
import csv
import sys


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except ValueError:
        return None


def report(path):
    try:
        rows = list(csv.reader(open(path, errors="replace")))
    except OSError as e:
        print(f"{path}: {e}")
        return
    # The header is the first row with a column naming executed instructions.
    head_i = next((i for i, r in enumerate(rows) if any("Instructions Executed" in c for c in r)), None)
    if head_i is None:
        print(f"{path}: no 'Instructions Executed' column; first lines:")
        for r in rows[:5]:
            print("   ", ",".join(r)[:200])
        return
    head = rows[head_i]
    body = [r for r in rows[head_i + 1:] if len(r) == len(head)]
    text_col = next((i for i, h in enumerate(head) if h.strip() in ("Source", "# Source")), None)
    if text_col is None:
        text_col = next((i for i, h in enumerate(head) if "Source" in h), 0)
    line_col = next((i for i, h in enumerate(head) if h.strip() in ("#", "Line", "Address")), None)
    for key in ("Instructions Executed", "Warp Stall Sampling (All Samples)"):
        col = next((i for i, h in enumerate(head) if h.strip().startswith(key)), None)
        if col is None:
            continue
        vals = [(num(r[col]) or 0.0, r) for r in body]
        total = sum(v for v, _ in vals) or 1.0
        print(f"== {path.split('/')[-1]}: top rows by {head[col]} (total {total:.4g})")
        for v, r in sorted(vals, key=lambda x: -x[0])[:40]:
            where = r[line_col] if line_col is not None else ""
            print(f"{100 * v / total:6.2f}%  {where:>8}  {r[text_col].strip()[:150]}")


for p in sys.argv[1:]:
    report(p)
