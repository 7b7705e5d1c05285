"""PEFT adapters, both ways.

usage:
  python peft_adapters.py write <out-dir>
      writes a tiny transformers Llama (base/) and PEFT adapters on it (plain, rsLoRA, rank_pattern +
      alpha_pattern, DoRA), each with the logits PEFT computes; prints one JSON line.
  python peft_adapters.py read <base-dir> <adapter-dir> <ids-json>
      loads an adapter (written by kpig) with PEFT and prints the logits as one JSON line.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

IDS = [[1, 5, 9, 17, 33, 2, 60, 61, 62, 63, 64, 70, 71, 72, 80, 81]]


def write(out):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    base = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0.0, 0.3)
    base_dir = os.path.join(out, "base")
    base.save_pretrained(base_dir, safe_serialization=True)
    variants = {
        "plain": dict(),
        "rslora": dict(use_rslora=True),
        "patterns": dict(rank_pattern={"model.layers.0.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3}),
        "rslora-patterns": dict(use_rslora=True, rank_pattern={"layers.1.self_attn.v_proj": 6},
                                alpha_pattern={"layers.0.self_attn.q_proj": 20}),
        "dora": dict(use_dora=True),
    }
    result = {"base": base_dir, "ids": IDS[0], "cases": []}
    for name, extra in variants.items():
        model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, **extra)
        peft_model = get_peft_model(model, lora).eval()
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_" in n:
                    p.normal_(0.0, 0.2)
            logits = peft_model(torch.tensor(IDS)).logits[0]
        d = os.path.join(out, name)
        peft_model.save_pretrained(d)
        result["cases"].append({"name": name, "dir": d, "logits": logits.flatten().tolist()})
    print(json.dumps(result))


def read(base_dir, adapter_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.no_grad():
        logits = peft_model(torch.tensor([json.loads(ids)])).logits[0]
    print(json.dumps({"logits": logits.flatten().tolist()}))


if sys.argv[1] == "write":
    write(sys.argv[2])
else:
    read(sys.argv[2], sys.argv[3], sys.argv[4])
