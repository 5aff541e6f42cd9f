"""Run inside an environment with the real Unsloth (tests/test_version_ends.py builds it): every call ftlab makes
into Unsloth binds to Unsloth's own signatures. On a CPU, UNSLOTH_ALLOW_CPU=1 lets Unsloth import (its CI mode);
loading a model still needs CUDA, so each Unsloth function is swapped for a checker that binds the arguments
ftlab passed and stops there. Both of Unsloth's functions take **kwargs, so binding alone would accept any
misspelled name: a keyword that only **kwargs takes fails here too. Prints one line per call checked.
"""
# ruff: noqa: I001  (unsloth is imported before transformers on purpose, as ftlab does on a GPU)

import inspect
import os
import sys

os.environ.setdefault("UNSLOTH_ALLOW_CPU", "1")
import unsloth  # first, as ftlab imports it on a GPU
from unsloth import FastLanguageModel

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import adapters
from ftlab.config import TrainConfig


class Bound(Exception):
    """Raised by a checker once the call has bound: Unsloth itself would need CUDA from here on."""


def checker(name, real):
    signature = inspect.signature(real)

    def check(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # TypeError on a missing or unknown positional/keyword
        var_kw = [p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
        swallowed = sorted(bound.arguments.get(var_kw[0], {})) if var_kw else []
        if swallowed:
            raise TypeError(f"FastLanguageModel.{name} has no parameter {swallowed} (only its **kwargs takes them, "
                            f"and ignores them): Unsloth renamed or dropped it")
        raise Bound(f"FastLanguageModel.{name}({', '.join(sorted(kwargs))})")

    return check


FastLanguageModel.from_pretrained = staticmethod(checker("from_pretrained", FastLanguageModel.from_pretrained))
FastLanguageModel.get_peft_model = staticmethod(checker("get_peft_model", FastLanguageModel.get_peft_model))

calls = [
    lambda: adapters.unsloth_load("HuggingFaceTB/SmolLM2-135M-Instruct", load_in_4bit=True, dtype=torch.bfloat16,
                                  max_seq_length=256, revision="main", trust_remote_code=False, device_map={"": 0}),
]
tiny = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=256))
for method in ("lora", "rslora", "qlora"):
    cfg = TrainConfig(method=method, backend="unsloth", gradient_checkpointing=True)
    calls.append(lambda cfg=cfg: adapters._unsloth_adapter(tiny, cfg))

for call in calls:
    try:
        call()
    except Bound as ok:
        print("binds:", ok)
    else:
        sys.exit("a call returned without reaching Unsloth")
print(f"unsloth {unsloth.__version__}: every call ftlab makes binds")
