#!/usr/bin/env python3
"""Baseline: Hugging Face transformers MambaForCausalLM (FP16, random weights) on the same shapes
as mq-bench, in the same run. Without the mamba_ssm / causal_conv1d CUDA kernels transformers runs
its PyTorch reference path, which is what a user without custom kernels gets.

Measures prefill 1x2048 (tokens/s; logits of the last position only where supported) and decode
at batch 1 (ms/token, from the difference of two greedy generate() lengths, so the prompt's
prefill cancels out). Writes JSON lines like mq-bench's.

usage: hf_baseline.py [--shapes 130m,1.4b,2.8b] [--json FILE] [--prefill-len 2048]
"""
import argparse
import json
import math
import sys
import time

import torch
import transformers
from transformers import MambaConfig, MambaForCausalLM

SHAPES = {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}


def emit(out, model, metric, value, unit):
    print(f"{model:12s} hf    {metric:28s} {value:12.4f} {unit}", flush=True)
    if out:
        out.write(json.dumps({"model": model, "mode": "hf_fp16", "metric": metric, "value": value, "unit": unit}) + "\n")
        out.flush()


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="130m,1.4b,2.8b")
    ap.add_argument("--json", default="")
    ap.add_argument("--prefill-len", type=int, default=2048)
    args = ap.parse_args()
    out = open(args.json, "w") if args.json else None
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    torch.manual_seed(0)
    for name in args.shapes.split(","):
        d, layers = SHAPES[name]
        cfg = MambaConfig(vocab_size=50280, hidden_size=d, num_hidden_layers=layers, state_size=16, expand=2,
                          conv_kernel=4, time_step_rank=math.ceil(d / 16), use_cache=True, pad_token_id=1,
                          eos_token_id=0, bos_token_id=0, tie_word_embeddings=True)
        with torch.device("cuda"):
            model = MambaForCausalLM(cfg)
        model = model.to(torch.float16).eval()
        gen = torch.Generator(device="cuda").manual_seed(1)
        with torch.no_grad():
            # Prefill: one warm-up on a short prompt, then one timed 1 x L forward.
            ids = torch.randint(2, 50280, (1, args.prefill_len), device="cuda", generator=gen)

            def fwd(x):
                try:
                    return model(input_ids=x, use_cache=False, logits_to_keep=1)
                except TypeError:
                    return model(input_ids=x, use_cache=False)

            fwd(ids[:, :32])
            dt, _ = timed(lambda: fwd(ids))
            emit(out, name, f"prefill_1x{args.prefill_len}_tok_per_s", args.prefill_len / dt, "tok/s")
            # Decode at batch 1: generate n1 and n2 new tokens from the same prompt.
            prompt = ids[:, :16]

            def generate(n):
                return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)

            generate(4)
            n1, n2 = 4, 20
            t1, _ = timed(lambda: generate(n1))
            t2, _ = timed(lambda: generate(n2))
            emit(out, name, "decode_b1_ms_per_step", (t2 - t1) / (n2 - n1) * 1e3, "ms")
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
