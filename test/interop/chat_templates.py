"""Chat templates as transformers applies them.

usage: python chat_templates.py <out-dir>
  trains two small byte-level BPE tokenizers with the `tokenizers` library (a Llama 3-style one with
  its split pattern and header tokens, a ChatML one as Qwen2 uses), saves each with a chat template
  through transformers, and prints one JSON line: per tokenizer its folder, the end-of-turn id, and
  per case the ids `apply_chat_template` gives for the generation prompt and for the conversation
  with the assistant's answer.
"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "Definition: Is the review positive or negative? Answer 'good' if positive, 'bad' if negative.",
    "Input: The soup was warm and cozy.\n\nOutput: good",
    "Which option is a kind of fruit? Answer with the letter.\n(A) saw (B) plum (C) Oslo",
    "Find the city in the sentence and write it backwards. On Monday, Mia took a red fox to Rome.",
    "Réponds en français : le café est-il chaud ? Oui, très chaud.",
    "assistant\n\nyes\n\nno\n\n  The answer is 42.\n",
] * 20

CASES = [
    {"instruction": "Is the review positive or negative? Answer 'good' if positive, 'bad' if negative.", "input": "The soup was warm and cozy.", "output": "good"},
    {"instruction": "Which option is a kind of fruit? Answer with the letter.", "input": "(A) saw (B) plum (C) Oslo", "output": "B"},
    {"instruction": "Say hello.", "input": "", "output": "hello there"},
    {"instruction": "Réponds : le café est-il chaud ?", "input": "café ☕", "output": "Oui, très chaud."},
    {"instruction": "Copy the last 3 words.\nKeep their order.", "input": "one two three four", "output": "two three four"},
    {"instruction": "Answer with a number.", "input": "6 * 7", "output": "42"},
]


def train(pre, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def ids_of(x):
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4 returned a list.
    return list(x["input_ids"]) if hasattr(x, "keys") else list(x)


def save(out, name, tok, template, bos, eos, eot):
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    fast.chat_template = template
    folder = os.path.join(out, name)
    fast.save_pretrained(folder)
    cases = []
    for c in CASES:
        user = c["instruction"] + ("\n\n" + c["input"] if c["input"] else "")
        msgs = [{"role": "user", "content": user}]
        prompt = ids_of(fast.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
        conv = ids_of(fast.apply_chat_template(msgs + [{"role": "assistant", "content": c["output"]}], tokenize=True))
        text = fast.apply_chat_template(msgs + [{"role": "assistant", "content": c["output"]}], tokenize=False)
        cases.append({**c, "prompt_ids": prompt, "conversation_ids": conv, "conversation_text": text})
    return {"name": name, "dir": folder, "eot_id": fast.convert_tokens_to_ids(eot), "eos_id": fast.convert_tokens_to_ids(eos), "cases": cases}


def main():
    out = sys.argv[1]
    llama = train(
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    )
    chatml = train(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    import transformers

    print(json.dumps({
        "transformers": transformers.__version__,
        "tokenizers": [
            save(out, "llama3-style", llama, LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
            save(out, "chatml", chatml, CHATML_TEMPLATE, "<|endoftext|>", "<|endoftext|>", "<|im_end|>"),
        ],
    }))


if __name__ == "__main__":
    main()
