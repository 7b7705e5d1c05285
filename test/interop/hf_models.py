"""Writes tiny random Hugging Face models with transformers (save_pretrained, safetensors, float32)
and the logits transformers computes for fixed token ids, for kpig to load and compare.

usage: python hf_models.py <out-dir>
Prints one JSON line: {"transformers": version, "cases": [{"name", "dir", "ids", "logits"}]}.
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

out = sys.argv[1]
torch.manual_seed(0)
common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)


def rope(theta, **scaling):
    # transformers 5 keeps θ and the scaling together in rope_parameters.
    return {"rope_parameters": {"rope_theta": theta, "rope_type": scaling.pop("rope_type", "default"), **scaling}}


cases = {
    "llama-theta5e5": LlamaConfig(**common, **rope(5e5)),
    "llama-llama3": LlamaConfig(**common, **rope(5e5, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                  high_freq_factor=4.0, original_max_position_embeddings=16)),
    "llama-linear": LlamaConfig(**common, **rope(1e4, rope_type="linear", factor=4.0)),
    "llama-dynamic": LlamaConfig(**common, **rope(1e4, rope_type="dynamic", factor=2.0)),
    "qwen2-theta1e6": Qwen2Config(**common, **rope(1e6)),
    "mistral": MistralConfig(**{**common, "sliding_window": None}, **rope(1e6)),
    "gpt2": GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=64),
    "llama-yarn": LlamaConfig(**common, **rope(1e4, rope_type="yarn", factor=4.0, original_max_position_embeddings=16)),
    "qwen2-yarn-betas": Qwen2Config(**common, **rope(1e6, rope_type="yarn", factor=2.0, original_max_position_embeddings=32,
                                                    beta_fast=16.0, beta_slow=2.0, truncate=False, attention_factor=1.3)),
    "gemma": GemmaConfig(**{**common, "tie_word_embeddings": True, "head_dim": 24}, **rope(1e4)),
    "llama-yarn-mscale": LlamaConfig(**common, **rope(1e4, rope_type="yarn", factor=8.0, original_max_position_embeddings=16,
                                                     mscale=1.0, mscale_all_dim=0.5)),
}
ids = [[1, 5, 9, 17, 33, 2, 60, 61, 62, 63, 64, 70, 71, 72, 80, 81, 90, 91, 92, 93, 94, 95, 96, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22]]
result = {"transformers": transformers.__version__, "cases": []}
for name, cfg in cases.items():
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        logits = model(torch.tensor(ids)).logits[0]
    d = os.path.join(out, name)
    model.save_pretrained(d, safe_serialization=True)
    result["cases"].append({"name": name, "dir": d, "ids": ids[0], "logits": logits.flatten().tolist()})
print(json.dumps(result))
