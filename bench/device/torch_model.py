"""The model bench of kpig_cuda_model through PyTorch + transformers on the same GPU, in the same
device run: IG scoring (a full and a masked batch of `pairs` sequences of `len` tokens, the LM head
on the 16 response-predicting rows of each, NLLs, KL, JS and entropies from both) and a training
step (8 × `len` tokens, loss on every position, AdamW), with float32 weights under bf16 autocast,
for attention `eager` and `sdpa`. Prints pairs/s, tokens/s, TFLOP/s (the FLOPs kpig_cuda_model
counts) and peak memory.

usage: python3 bench/device/torch_model.py <model-dir> [pairs] [len]
"""
import sys
import time

try:
    import torch
    import transformers
except ImportError as e:
    print(f"no PyTorch/transformers here ({e}): nothing run")
    sys.exit(3)
if not torch.cuda.is_available():
    print("no CUDA device for PyTorch here: nothing run")
    sys.exit(3)


def per_call(fn, reps=5):
    """Seconds per call of fn after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main():
    path = sys.argv[1]
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    length = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    R = 16
    for attn in ("eager", "sdpa"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation=attn).cuda()
        cfg = model.config
        N = sum(p.numel() for p in model.parameters())
        layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
        g = torch.Generator(device="cuda").manual_seed(7)
        full = torch.randint(0, cfg.vocab_size, (pairs, length), device="cuda", generator=g)
        masked = full.clone()
        masked[:, 4:16] = torch.randint(0, cfg.vocab_size, (pairs, 12), device="cuda", generator=g)

        def logits(ids):
            # The head on the last R + 1 rows only, as kpig runs it (older transformers name the argument differently).
            for kw in ("logits_to_keep", "num_logits_to_keep"):
                try:
                    return model(ids, **{kw: R + 1}).logits[:, -(R + 1):-1]
                except TypeError:
                    continue
            return model(ids).logits[:, -(R + 1):-1]

        def score():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                lf = logits(full).float().log_softmax(-1)
                lm = logits(masked).float().log_softmax(-1)
            y = full[:, -R:]
            nll_f = -lf.gather(-1, y[..., None])
            nll_m = -lm.gather(-1, y[..., None])
            pf, pm = lf.exp(), lm.exp()
            kl = (pf * (lf - lm)).sum(-1)
            mix = (0.5 * (pf + pm)).log()
            js = 0.5 * (pf * (lf - mix)).sum(-1) + 0.5 * (pm * (lm - mix)).sum(-1)
            return torch.stack([nll_f.mean(), nll_m.mean(), kl.mean(), js.mean()]).cpu()

        s = per_call(score)
        flops = 2.0 * (2 * N * length + 2.0 * layers * length * length * hidden) * pairs
        print(f"torch {attn} ig: {pairs} pairs × 2 × {length} tokens: {s:.4f} s per call, {pairs / s:.1f} pairs/s, {flops / s / 1e12:.1f} TFLOP/s", flush=True)

        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        batch = torch.randint(0, cfg.vocab_size, (8, length), device="cuda", generator=g)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        st = per_call(step)
        tokens = 8 * length
        tflops = (6 * N * tokens + 3.0 * 8 * 2.0 * layers * length * length * hidden) / st / 1e12
        print(f"torch {attn} train: 8 × {length} tokens: {st:.4f} s per step, {tokens / st:.0f} tokens/s, {tflops:.1f} TFLOP/s; "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
        del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
