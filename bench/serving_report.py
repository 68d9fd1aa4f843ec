#!/usr/bin/env python3
"""Serving table of tests/gpu/service.sh: mq-loadgen runs (loadgen_<model>_<streams>.json) next to
the engine's own decode steps and prefill from mq-bench in the same run (service_mq_bench.json),
with the targets of the serving issue:
  batching gain      tokens/s at 64 streams / at 1 stream  >= 20
  ITL overhead       ITL p50 at 1 stream <= engine decode step (batch 1) + 0.15 ms
  64-stream rate     tokens/s at 64 streams >= 0.85 * 64 / engine batch-64 step
  TTFT overhead      TTFT p50 of a 512-token prompt at 1 stream <= engine prefill 1x512 + 2 ms
Usage: serving_report.py OUT_DIR [--md FILE]"""
import glob, json, os, sys

out = sys.argv[1]
md = sys.argv[sys.argv.index("--md") + 1] if "--md" in sys.argv else None
bench = {}
path = os.path.join(out, "service_mq_bench.json")
if os.path.exists(path):
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        bench[(r["model"], r["mode"], r["metric"])] = r["value"]

def engine(mode, metric):
    return bench.get(("2.8b", mode, metric))

rows, lines = [], []
for f in sorted(glob.glob(os.path.join(out, "loadgen_*.json"))):
    r = json.load(open(f))
    cfg = r["config"]
    rows.append((cfg["model"], cfg["streams"], cfg.get("prompt_tokens"), cfg["max_new_tokens"], r["output_tokens_per_s"],
                 r["ttft_ms"]["p50"], r["ttft_ms"]["p99"], r["itl_ms"]["p50"], r["itl_ms"]["p99"], r["requests"]["failed"]))
rows.sort(key=lambda x: (x[0], x[1]))
lines.append("| model | streams | prompt | new | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | failed |")
lines.append("|---|---|---|---|---|---|---|---|---|---|")
fmt = lambda v: "-" if v is None else ("%.1f" % v if v >= 100 else "%.3f" % v)
for m, s, p, n, tps, t50, t99, i50, i99, failed in rows:
    lines.append("| %s | %d | %s | %d | %s | %s | %s | %s | %s | %d |" % (m, s, p, n, fmt(tps), fmt(t50), fmt(t99), fmt(i50), fmt(i99), failed))
lines.append("")
for model, mode in (("s28-int8", "int8"), ("s28-fp16", "fp16")):
    by = {r[1]: r for r in rows if r[0] == model}
    if not by:
        continue
    step1, step64 = engine(mode, "decode_b1_ms_per_step"), engine(mode, "decode_b64_ms_per_step")
    prefill_rate = engine(mode, "prefill_1x512_tok_per_s")
    lines.append("%s (engine, same run: decode b1 %s ms, b64 %s ms, b256 %s ms, prefill 1x512 %s ms)" % (
        model, fmt(step1), fmt(step64), fmt(engine(mode, "decode_b256_ms_per_step")),
        fmt(512 / prefill_rate * 1e3 if prefill_rate else None)))
    def check(name, value, bound, ok):
        lines.append("  %-36s %-12s target %-14s %s" % (name, fmt(value), bound, "met" if ok else "MISSED"))
    if 1 in by and 64 in by and by[1][4]:
        gain = by[64][4] / by[1][4]
        check("batching gain (64 / 1 streams)", gain, ">= 20", gain >= 20)
    if 1 in by and step1:
        check("ITL p50 at 1 stream (ms)", by[1][7], "<= %.3f" % (step1 + 0.15), by[1][7] <= step1 + 0.15)
    if 64 in by and step64:
        want = 0.85 * 64 / (step64 * 1e-3)
        check("tokens/s at 64 streams", by[64][4], ">= %.0f" % want, by[64][4] >= want)
    if 1 in by and prefill_rate:
        bound = 512 / prefill_rate * 1e3 + 2
        check("TTFT p50, 512-token prompt (ms)", by[1][5], "<= %.3f" % bound, by[1][5] <= bound)
text = "\n".join(lines)
print(text)
if md:
    open(md, "w").write(text + "\n")
