"""PEFT and Unsloth: the one module that touches either library's API.

`peft_config(cfg, model)` builds the PEFT config for a method (LoRA, rsLoRA, DoRA, QLoRA, IA3,
prefix or prompt tuning); `add_adapter(model, cfg)` returns the real `PeftModel` (or the model
itself for full fine-tuning); `trainable_parameters(model)` counts what will learn.
Leaves out: training (see `training.py`) and merging.
"""

from __future__ import annotations

import warnings

import torch

from ftlab.bottleneck import add_bottlenecks
from ftlab.config import UNSLOTH_METHODS

# transformers 5.23 deprecated `model.is_gradient_checkpointing`, which PEFT's get_peft_model and TRL still
# read: a warning about the libraries' own code that a learner cannot act on, printed under every training cell
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
# PEFT's adapter save asks the hub whether the base's vocabulary changed; offline it cannot and warns on
# every save. ftlab never resizes the embeddings, so PEFT's fallback ("not modified") is right.
warnings.filterwarnings("ignore", message="Could not find a config file in .* will assume that the vocabulary")


def unsloth_load(name: str, *, load_in_4bit: bool, dtype: torch.dtype | None, max_seq_length: int,
                 revision: str | None = None, trust_remote_code: bool = False, device_map=None):
    """(model, tokenizer) through Unsloth's FastLanguageModel (CUDA only; see hardware.choose_backend).
    device_map None: Unsloth's own default (one GPU); under torchrun models.default_device_map gives each rank its own."""
    from unsloth import FastLanguageModel

    where = {} if device_map is None else {"device_map": device_map}
    return FastLanguageModel.from_pretrained(
        model_name=name, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit,
        revision=revision, trust_remote_code=trust_remote_code, **where)


def linear_module_names(model) -> list[str]:
    """Short names of the linear layers an adapter can target (q_proj, k_proj, ...), lm_head excluded."""
    head = model.get_output_embeddings()
    # bitsandbytes' Linear4bit subclasses nn.Linear, so 4-bit models list the same names
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names)


def resolve_target_modules(model, target_modules: str | list[str]) -> str | list[str]:
    """'all-linear' as is; a list is checked against the model's linear layers (an unknown name raises)."""
    if target_modules == "all-linear":
        return target_modules
    if isinstance(target_modules, str):  # one layer name
        target_modules = [target_modules]
    names = linear_module_names(model)
    unknown = [t for t in target_modules if t not in names]
    if unknown:
        raise ValueError(f"target_modules {unknown} match no linear layer of this model; its linear layers "
                         f"are {', '.join(names)}. Fix: pick from those, or use target_modules=all-linear.")
    return list(target_modules)


def _ia3_modules(model, targets: str | list[str]) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for IA3: it rescales the output of attention layers and the
    input of the feed-forward down projection (PEFT's per-architecture table says which that is)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

    targets = linear_module_names(model) if targets == "all-linear" else list(targets)
    known = FEEDFORWARD.get(model.config.model_type, [])
    return targets, [t for t in targets if t in known]


def peft_config(cfg, model):
    """The PEFT config for cfg.method (None for method='full'); `model` is the base, used to check names."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    if cfg.method == "full":
        return None
    if cfg.method in ("lora", "rslora", "dora", "qlora"):
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=resolve_target_modules(model, cfg.target_modules), bias="none",
            use_rslora=cfg.method == "rslora",  # scale alpha/sqrt(r), not alpha/r: high ranks keep learning
            use_dora=cfg.method == "dora",  # learns magnitude and direction apart; ~2x slower steps
        )
    if cfg.method == "ia3":
        targets, feedforward = _ia3_modules(model, resolve_target_modules(model, cfg.target_modules))
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets,
                         feedforward_modules=feedforward)
    if cfg.method == "prefix":  # trained key/value vectors prepended in every layer
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.method == "prompt":  # trained input embeddings prepended to the prompt (random init)
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    raise ValueError(f"method={cfg.method!r} is not a PEFT method. Fix: see ftlab.config.METHODS.")


def is_4bit(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False))


def add_adapter(model, cfg):
    """The model ready to train with cfg.method: a PeftModel, or `model` itself: all weights for 'full',
    with bottleneck adapters inserted for 'adapter' (ftlab.bottleneck).

    cfg must be resolved (ftlab.config.resolve): cfg.backend is 'unsloth' or 'transformers' and
    cfg.gradient_checkpointing is a bool.
    """
    if cfg.method == "qlora" and not is_4bit(model):
        raise ValueError("method=qlora needs the base loaded in 4-bit. "
                         "Fix: load_model(name, load_in_4bit=True).")
    if cfg.method != "qlora" and is_4bit(model):
        raise ValueError(f"method={cfg.method} on a 4-bit base: only LoRA matrices can train on frozen "
                         "4-bit weights. Fix: use method=qlora, or load the model without load_in_4bit.")
    if cfg.backend == "unsloth":
        return _unsloth_adapter(model, cfg)
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.method == "adapter":  # bottleneck adapters: ftlab's own (PEFT has none)
        return add_bottlenecks(model, cfg.r, cfg.adapter_placement)
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        # casts norms/embeddings to fp32 and makes inputs require grad, so gradients reach the LoRA matrices
        # through frozen 4-bit layers (with checkpointing on)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, peft_config(cfg, model))


def _unsloth_adapter(model, cfg):
    if cfg.method not in UNSLOTH_METHODS:
        raise ValueError(f"method={cfg.method} is not built by Unsloth's get_peft_model (it builds "
                         f"{', '.join(UNSLOTH_METHODS)}). Fix: set backend=transformers.")
    from unsloth import FastLanguageModel

    targets = resolve_target_modules(model, cfg.target_modules)
    if targets == "all-linear":  # Unsloth wants names; these are all linear layers but lm_head
        targets = linear_module_names(model)
    return FastLanguageModel.get_peft_model(
        model, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
        bias="none", use_rslora=cfg.method == "rslora", random_state=cfg.seed,
        # Unsloth's own checkpointing offloads activations to CPU: less memory than PyTorch's at equal speed
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
    )


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as the parameters they encode."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
            n *= 2 * p.quant_storage.itemsize if hasattr(p, "quant_storage") else 2
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
