#!/usr/bin/env python3
# The quality table of docs/quantization-vim.md: Vim quantization on the vim-digits fixture, every
# preset x bits x activation granularity over seeds 0,1,2 (each seed draws 128 of the 200
# calibration images and the Hadamard signs), and the mambaquant ablation, through
# `mq-engine quantize --json`. Markdown to stdout, the raw numbers as JSON to argv[1].
# Run from the repository root: python3 tests/engine/vim_quality_table.py /tmp/vim-quality.json
# MQ_VIM_MODEL=DIR runs another model on the same images (the outlier variant of
# tests/engine/vim_outlier_variant.py); MQ_VIM_ABLATION=0 skips the ablation; MQ_VIM_NO_S5_ROW=1
# adds mambaquant without S5 to the main table. MQ_VIM_SCOPE=full quantizes with --scope full;
# MQ_VIM_PRESETS, MQ_VIM_ACTS and MQ_VIM_SEEDS (comma lists) narrow the main table.
import json, os, subprocess, sys, tempfile, statistics
ENGINE = os.environ.get("MQ_ENGINE", "build/worker/engine/mq-engine")
F = os.environ.get("MQ_VISION", "../shared/fixtures/vision")
REF = F + "/vim-digits-reference.safetensors"
MODEL = os.environ.get("MQ_VIM_MODEL", F + "/vim-digits")
SEEDS = [int(x) for x in os.environ.get("MQ_VIM_SEEDS", "0,1,2").split(",")]
SCOPE = os.environ.get("MQ_VIM_SCOPE", "linear")
PRESETS = os.environ.get("MQ_VIM_PRESETS", "rtn,smoothquant,quarot,mambaquant").split(",")
ACTS = os.environ.get("MQ_VIM_ACTS", "per_token,per_tensor").split(",")
def run(preset, bits, act, seed, extra=()):
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([ENGINE, "quantize", "--model", MODEL, "--calib", REF, "--calib-prefix", "calib_",
                              "--samples", "128", "--seed", str(seed), "--eval", REF, "--eval-prefix", "test_",
                              "--out", d + "/q", "--preset", preset, "--bits", bits, "--act", act, "--scope", SCOPE, "--json", *extra],
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out)["evaluation"]
rows, results = [], {}
def cell(name, preset, bits, act, extra=()):
    ev = [run(preset, bits, act, s, extra) for s in SEEDS]
    acc = [e["quantized_accuracy"] for e in ev]
    r = {"name": name, "bits": bits, "act": act, "float_accuracy": ev[0]["float_accuracy"], "accuracy": acc,
         "agreement": [e["top1_agreement"] for e in ev], "kl": [e["mean_kl"] for e in ev]}
    results.setdefault("cells", []).append(r)
    return r
def fmt(r):
    a = r["accuracy"]
    return "| %s | %s | %s | %.2f%% (%.2f–%.2f) | %.4f | %.2e |" % (r["name"], r["bits"], r["act"], 100 * statistics.mean(a),
        100 * min(a), 100 * max(a), statistics.mean(r["agreement"]), statistics.mean(r["kl"]))
print("| preset | bits | activations | top-1 (mean, min–max over seeds %s) | agreement | mean KL (nats) |" % ",".join(map(str, SEEDS)))
print("|---|---|---|---|---|---|")
first = True
for bits in ["w8a8", "w4a8"]:
    for act in ACTS:
        variants = [(p, p, ()) for p in PRESETS]
        if os.environ.get("MQ_VIM_NO_S5_ROW", "0") == "1":
            variants.append(("mambaquant − S5", "mambaquant", ("--no-smooth-s5",)))
        for name, p, extra in variants:
            r = cell(name, p, bits, act, extra)
            if first:
                print("| float | – | – | %.2f%% | 1 | 0 |" % (100 * r["float_accuracy"])); first = False
            print(fmt(r)); sys.stdout.flush()
if os.environ.get("MQ_VIM_ABLATION", "1") == "0":
    json.dump(results, open(sys.argv[1], "w"), indent=1); sys.exit(0)
print()
print("MambaQuant ablation (each row switches one component off):")
print()
print("| variant | bits | activations | top-1 | agreement | mean KL (nats) |")
print("|---|---|---|---|---|---|")
abl = [("mambaquant (all)", ()), ("− KLT on R1 (Hadamard R1)", ("--no-klt-r1",)), ("− KLT on R5", ("--no-klt-r5",)), ("− S5 δ smoothing", ("--no-smooth-s5",)),
       ("− online R2", ("--no-online-r2",)), ("− S2 smoothing", ("--no-smooth-s2",)),
       ("R1 Σ from block 0 only", ("--r1-layer0",)),
       ("Hadamard R1 + R5 only", ("--no-klt-r1", "--no-klt-r5", "--no-smooth-s5", "--no-online-r2", "--no-smooth-s2"))]
for bits in ["w8a8", "w4a8"]:
    for name, extra in abl:
        print(fmt(cell(name, "mambaquant", bits, "per_tensor", extra))); sys.stdout.flush()
json.dump(results, open(sys.argv[1], "w"), indent=1)
