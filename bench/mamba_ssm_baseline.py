#!/usr/bin/env python3
"""Peer baseline: mamba_ssm (state-spaces/mamba 2.3.2) generating in FP16 with its own CUDA-graph
decode loop and Triton one-step scan, on the same shapes and batches as mq-bench, in the same run.

The package is carried as source (../shared/peers/state-spaces-mamba, copied to
third_party_local/peers by tests/gpu/run.sh's caller) and runs on the GPU machine's torch and Triton;
its compiled CUDA extensions are absent, so the prompt goes through selective_scan_ref (the prompt's
cost cancels out below) and decoding through `generate(cg=True)`: per step one CUDA graph of the
whole model with the Triton selective_state_update — the loop a mamba_ssm user gets.

A decode step = (time of prompt + 8 + n new tokens − time of prompt + 8) / n, best of 3 (the
method of ../shared/peers/README.md). Random weights (mamba_ssm's own init), random prompt ids.
Writes JSON lines like mq-bench's: model=<shape>, mode=mamba_ssm_fp16,
metric=decode_b{B}_ms_per_step.

usage: mamba_ssm_baseline.py [--shapes 130m,1.4b,2.8b] [--batches 1,8,64,256] [--json FILE]
"""
import argparse
import json
import sys
import time

import torch

SHAPES = {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}


def parse_list(text, allowed=None):
    items = [x for x in text.split(",") if x]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise SystemExit(f"unknown shape(s) {bad}; known: {', '.join(allowed)}")
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="130m,1.4b,2.8b")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    shapes = parse_list(args.shapes, SHAPES)
    batches = [int(b) for b in parse_list(args.batches)]
    if any(b < 1 or b > 4096 for b in batches) or not 1 <= args.new_tokens <= 4096 or not 1 <= args.prompt_len <= 4096:
        raise SystemExit("batches, --new-tokens and --prompt-len must be in 1..4096")

    # Without the selective_scan_cuda extension the prompt must take the reference scan; patch it
    # before any model is built (mamba_simple binds the name at import).
    import mamba_ssm
    import mamba_ssm.modules.mamba_simple as mamba_simple
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    mamba_simple.selective_scan_fn = selective_scan_ref

    out = open(args.json, "w") if args.json else None
    print(f"mamba_ssm {mamba_ssm.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    torch.manual_seed(0)
    for name in shapes:
        d, layers = SHAPES[name]
        cfg = MambaConfig(d_model=d, n_layer=layers, vocab_size=50280, ssm_cfg={"layer": "Mamba1"}, rms_norm=True,
                          residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
        model = MambaLMHeadModel(cfg, device="cuda", dtype=torch.float16).eval()
        for B in batches:
            gen = torch.Generator(device="cuda").manual_seed(B)
            ids = torch.randint(2, 50280, (B, args.prompt_len), device="cuda", generator=gen)

            def run(new):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.generate(ids, max_length=args.prompt_len + new, cg=True, top_k=1)
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            try:
                run(8)  # captures the graph for this batch, warms Triton's autotuner
                short = min(run(8) for _ in range(3))
                long = min(run(8 + args.new_tokens) for _ in range(3))
            except torch.cuda.OutOfMemoryError as e:
                print(f"{name:12s} mamba_ssm b{B}: out of memory ({e})", flush=True)
                torch.cuda.empty_cache()
                continue
            ms = (long - short) / args.new_tokens * 1e3
            metric = f"decode_b{B}_ms_per_step"
            print(f"{name:12s} mamba_ssm {metric:28s} {ms:12.4f} ms", flush=True)
            if out:
                out.write(json.dumps({"model": name, "mode": "mamba_ssm_fp16", "metric": metric, "value": ms,
                                      "unit": "ms"}) + "\n")
                out.flush()
        del model
        model = None
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
