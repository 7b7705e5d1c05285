#!/usr/bin/env python3
"""IG scoring of given token rows with the tuned PyTorch peer (../shared/peers/torch_kpig.py: its
model code, metrics and environment settings), without prefix sharing: every pair's full and masked
sequences run whole. Rows are batched B at a time after sorting by length (the peer's best case:
little right padding), and the LM head runs on the response-predicting rows only.

  /usr/bin/python3 bench/peers/torch_rows.py --model gpt2-tiny --rows rows.json [--threads 2] [--reps 3]
rows.json: {"pairs": [{"full": [...], "masked": [...], "response_len": R}, ...]}
Prints one JSON line: sec_median, sec_min, sec_max, pairs, tokens, and the first pair's metrics.
"""
import argparse
import json
import os
import statistics
import sys
import time

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "peers")
sys.path.insert(0, os.path.abspath(PEERS))
import torch_kpig as tk  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, choices=sorted(tk.CONFIGS))
    p.add_argument("--rows", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--blas", default="openblas-openmp", choices=sorted(tk.BLAS_DIRS))
    p.add_argument("--coretype", default="auto")
    p.add_argument("--malloc", default="glibc-tuned")
    p.add_argument("--aten-cap", dest="aten_cap", default="auto", choices=["auto", "default", "avx512", "avx2"])
    args = p.parse_args()
    tk.setup_env_and_reexec(args)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = tk.CONFIGS[args.model]
    model = tk.build(torch)(c).eval()
    pairs = json.load(open(args.rows))["pairs"]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i]["full"]))

    def hidden(idx):
        B, T = idx.shape
        x = model.wte(idx)
        cos = sin = None
        if model.wpe is not None:
            x = x + model.wpe(torch.arange(T))
        else:  # the peer's RoPE tables (rotate-half, theta 10000)
            hd = c["d"] // c["n_head"]
            inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
            emb = torch.cat([f, f], dim=-1)
            cos, sin = emb.cos(), emb.sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        for blk in model.blocks:
            x = blk(x, mask, cos, sin)
        return x

    results = {}

    def score_all():
        for b in range(0, len(order), args.batch):
            ids = order[b:b + args.batch]
            seqs = [pairs[i]["full"] for i in ids] + [pairs[i]["masked"] for i in ids]
            T = max(len(s) for s in seqs)
            batch = torch.zeros(len(seqs), T, dtype=torch.long)
            for r, s in enumerate(seqs):
                batch[r, :len(s)] = torch.tensor(s)
            with torch.inference_mode():
                h = hidden(batch)
                rows = []
                for r, s in enumerate(seqs):
                    R = pairs[ids[r % len(ids)]]["response_len"]
                    rows.append(h[r, len(s) - R - 1:len(s) - 1])
                logits = F.linear(model.norm(torch.cat(rows, 0)), model.wte.weight)
                at = 0
                offs = []
                for r, s in enumerate(seqs):
                    R = pairs[ids[r % len(ids)]]["response_len"]
                    offs.append((at, R))
                    at += R
                n = len(ids)
                for k, i in enumerate(ids):
                    (af, R), (am, _) = offs[k], offs[n + k]
                    lg = torch.stack([logits[af:af + R], logits[am:am + R]], 0)
                    tg = torch.tensor(pairs[i]["full"][-R:])[None]
                    m = tk.ig_metrics(torch, lg, tg, 1)
                    results[i] = {k2: float(v[0]) for k2, v in m.items()}

    ts = tk.timed(score_all, 1, args.reps)
    print(json.dumps({"peer": "torch", "model": args.model, "threads": args.threads, "pairs": len(pairs),
                      "tokens": sum(len(x["full"]) + len(x["masked"]) for x in pairs),
                      "sec_median": statistics.median(ts), "sec_min": min(ts), "sec_max": max(ts),
                      "aten_cap": os.environ.get("ATEN_CPU_CAPABILITY"), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                      "metrics_pair0": results.get(0)}))


if __name__ == "__main__":
    main()
