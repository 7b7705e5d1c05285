"""The random Hugging Face models of the device run: a tiny LLaMA-style and a tiny GPT-2 model for
whole-model parity (float32), and a ~135M (SmolLM-135M's shape) and a ~1.2B (Llama-3.2-1B's shape)
LLaMA-style model for the bench (bfloat16 files; kpig reads them into float32). Initialised on the
GPU when there is one. Writes <out>/<name>/ for each name asked for.

usage: python3 bench/device/models.py <out> llama-tiny gpt2-tiny smol-135m llama-1b
"""
import os
import sys

import torch
import transformers

SHAPES = {
    "llama-tiny": ("llama", dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                                 vocab_size=1000, max_position_embeddings=512, tie_word_embeddings=False), torch.float32),
    "gpt2-tiny": ("gpt2", dict(n_embd=256, n_layer=4, n_head=8, vocab_size=1000, n_positions=512), torch.float32),
    "smol-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=10000.0), torch.bfloat16),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                               vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0), torch.bfloat16),
}


def main():
    out, names = sys.argv[1], sys.argv[2:]
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for name in names:
        family, kw, dtype = SHAPES[name]
        cfg = transformers.LlamaConfig(**kw) if family == "llama" else transformers.GPT2Config(**kw)
        with torch.device(dev):
            model = (transformers.LlamaForCausalLM if family == "llama" else transformers.GPT2LMHeadModel)(cfg)
        model = model.to(dtype)
        path = os.path.join(out, name)
        model.save_pretrained(path, safe_serialization=True)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n / 1e6:.1f}M parameters, {dtype}, {path}", flush=True)
        del model
        if dev == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
