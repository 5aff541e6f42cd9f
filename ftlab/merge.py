"""Merge a LoRA adapter into its base model, check the merge, and run several adapters on one base.

`merge_adapter(run_dir, out_dir)` writes a plain transformers folder (no PEFT needed to load it) and
`merge_fidelity.json` beside it; `load_adapters` / `use_adapter` / `disabled` / `delete_adapter` /
`combine_adapters` keep several adapters on one base in memory.

This is the merging module: its PEFT calls (PeftModel.from_pretrained, merge_and_unload, load_adapter,
set_adapter, disable_adapter, delete_adapter, add_weighted_adapter) live here rather than in
`adapters.py`, which keeps the PEFT calls of loading and training. Its one bitsandbytes call is
`dequantize_4bit`, to merge QLoRA adapters into the weights they were trained against.
Leaves out: exporting to GGUF (ftlab.export), merging full fine-tunes, adapters other than LoRA.
"""

from __future__ import annotations

import copy
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from peft import PeftModel

# Prompts for the fidelity check when no validation rows are given: short, varied, deterministic.
BUILTIN_PROMPTS = [
    "What is the capital of France?",
    "Write the date 3 March 2021 in ISO format.",
    "What is 17 plus 25?",
    "Give me three tips for learning a new language.",
    "Translate 'good morning' into Spanish.",
    "Explain in one sentence what a neural network is.",
]

# Mean KL divergence (nats per token) allowed between the adapter model's next-token distributions and
# the merged model's, by the coarsest dtype either of them computes in. The merge is exact in real
# arithmetic, so what is left is rounding. Measured on SmolLM2-135M: fp32 merge ~1e-8; the base model
# alone cast to bf16 (8 significant bits) ~3e-3; a QLoRA merge saved in bf16 vs the 4-bit adapter
# model ~1e-3..1e-2. A QLoRA adapter merged into the original 16-bit weights instead of the dequantized
# ones: 0.2..1.3, so even the bf16 bound catches a merge into the wrong weights.
MAX_MEAN_KL = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def tolerance(*dtypes: torch.dtype) -> float:
    """MAX_MEAN_KL for the coarsest of `dtypes` (bf16 is coarser than fp16: 8 vs 11 significant bits)."""
    return max(MAX_MEAN_KL[d] for d in dtypes)


@dataclass
class MergeResult:
    out_dir: Path
    base: str                  # the base model the adapter was merged into
    quantized_base: bool       # True: a QLoRA adapter merged into the dequantized NF4 weights
    dtype: torch.dtype         # dtype of the saved weights
    size_bytes: int            # size of the saved weights on disk
    fidelity: dict = field(default_factory=dict)  # what merge_fidelity.json holds

    def summary(self) -> str:
        """Two lines for `ftlab merge`: where, how big, and how close to the adapter model."""
        into = "the dequantized 4-bit weights (QLoRA)" if self.quantized_base else "the base weights"
        line = f"merged into {into} of {self.base}: {self.out_dir} ({self.size_bytes / 1e9:.2f} GB, {self.dtype})"
        saved = self.fidelity.get("saved_model")
        if saved is None:
            return line + "\nfidelity not checked (check=False)"
        return (line + f"\nvs the adapter model: mean KL {saved['mean_kl']:.2g} nats/token (limit "
                f"{self.fidelity['max_mean_kl']:g}), max |logit diff| {saved['max_abs_logit_diff']:.3g}, greedy "
                f"{'identical' if saved['greedy_identical'] else str(saved['greedy_mismatches']) + ' differ'}")


def adapter_config(adapter_dir) -> dict:
    if (Path(adapter_dir) / "bottleneck_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds bottleneck adapters (method=adapter): they cannot be merged into "
                         "the weights, because of the nonlinearity between their two matrices. Fix: load them on the "
                         "base with ftlab.bottleneck.load_bottlenecks, or train method=lora to merge")
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())


def trained_in_4bit(adapter_dir) -> bool:
    """True when the run's finetune_config.yaml says it trained on a 4-bit base (method qlora / load_in_4bit)."""
    path = Path(adapter_dir) / "finetune_config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    return str(cfg.get("method", "")).lower() == "qlora" or bool(cfg.get("load_in_4bit", False))


def dequantize(model, dtype: torch.dtype = torch.float32):
    """Replace every bitsandbytes Linear4bit in `model` by an nn.Linear holding its dequantized weights (in place).

    These are the weights a QLoRA adapter was trained against: NF4 levels times the per-block scales.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    for name, module in list(model.named_modules()):
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        data, state = module.weight.data, module.weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            # CPU inference repacked this layer (and rounded its scales to bf16); undo it as bnb's save does.
            data, state = F._convert_weight_packed_for_cpu_inverse(data, state)
        linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                 device=data.device, dtype=dtype)
        linear.weight.data = F.dequantize_4bit(data, state).to(dtype)  # (out_features, in_features)
        if module.bias is not None:
            linear.bias.data = module.bias.data.to(dtype)
        model.set_submodule(name, linear)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # else from_pretrained would re-quantize it
    return model.to(dtype)


def merge(peft_model):
    """merge_and_unload, refusing 4-bit layers: rounding W + BA back to NF4 loses the adapter's update."""
    import bitsandbytes as bnb

    # Measured on a QLoRA adapter trained here: re-quantizing W + B@A changed 0.04% of the 4-bit codes
    # and kept ~2% of the update (its projection on B@A), so the "merged" 4-bit model is the base model.
    if any(isinstance(m, bnb.nn.Linear4bit) for m in peft_model.modules()):
        raise ValueError(
            "refusing to merge into 4-bit weights: the merged W + B@A would be rounded back to NF4, whose "
            "steps are larger than most of the adapter's update, so the merge would lose it. Fix: dequantize "
            "first (ftlab.merge.dequantize(model)) or use merge_adapter(run_dir, out_dir), which does."
        )
    return peft_model.merge_and_unload()


def start_from(model, adapter_dir):
    """`model` with the adapter in `adapter_dir` merged into its weights (in memory): a starting policy.

    Training then puts a fresh adapter on top; switching that one off gives this starting point back."""
    return merge(PeftModel.from_pretrained(model, str(adapter_dir)))


def _as_messages(item) -> list[dict]:
    """A prompt as chat messages: a string, a list of messages, or a dataset row whose last message is the answer."""
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if isinstance(item, dict):
        return list(item["messages"][:-1])
    return list(item)


@torch.inference_mode()
def outputs(model, tokenizer, prompts, max_new_tokens: int = 24) -> dict:
    """Next-token logits on each prompt (fp32, one prompt at a time: no padding) and the greedy replies."""
    from ftlab.generate import generate_batch

    messages = [_as_messages(p) for p in prompts]
    device = next(model.parameters()).device
    logits = []
    for m in messages:
        enc = tokenizer.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True).to(device)
        logits.append(model(**enc).logits[0].float())  # (prompt_len, vocab)
    return {"logits": logits, "greedy": generate_batch(model, tokenizer, messages, max_new_tokens=max_new_tokens)}


def compare(ref: dict, other: dict) -> dict:
    """How far `other`'s outputs are from `ref`'s: max |logit difference|, mean KL(ref || other), greedy replies."""
    diffs, kls = [], []
    for a, b in zip(ref["logits"], other["logits"]):
        a, b = a.float().cpu(), b.float().cpu()  # the reference may sit on the GPU, a reloaded model on the CPU
        diffs.append((a - b).abs().max().item())
        logp, logq = a.log_softmax(-1), b.log_softmax(-1)
        kls.append((logp.exp() * (logp - logq)).sum(-1).mean().item())  # nats, averaged over positions
    mismatched = [i for i, (x, y) in enumerate(zip(ref["greedy"], other["greedy"])) if x != y]
    return {"prompts": len(diffs), "max_abs_logit_diff": max(diffs), "mean_kl": sum(kls) / len(kls),
            "greedy_identical": not mismatched, "greedy_mismatches": len(mismatched)}


def fidelity(adapter_model, merged_model, tokenizer, prompts=None) -> dict:
    """Compare the adapter model with the merged one on `prompts` (validation rows or strings; default built-ins)."""
    prompts = prompts or BUILTIN_PROMPTS
    return compare(outputs(adapter_model, tokenizer, prompts), outputs(merged_model, tokenizer, prompts))


def weights_size(model, dtype: torch.dtype) -> int:
    """Bytes the weights take once saved in `dtype` (tied weights counted once; safetensors adds ~nothing)."""
    unique = {p.data_ptr(): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique) * torch.empty((), dtype=dtype).element_size()


def check_disk(out_dir, need: int, what: str = "the merged model",
               fix: str = "choose another out_dir, or save in bf16 (half the size of fp32)") -> None:
    """Raise before writing when the disk holding `out_dir` has less than `need` bytes (+10%) free."""
    where = Path(out_dir).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need * 1.1:
        raise OSError(
            f"not enough disk for {what}: it needs {need / 1e9:.2f} GB and {where} has "
            f"{free / 1e9:.2f} GB free. Fix: free some space, {fix}."
        )


def merge_adapter(adapter_dir, out_dir, *, base: str | None = None, dtype: torch.dtype = torch.bfloat16,
                  check: bool = True, qlora: bool | None = None, prompts=None) -> MergeResult:
    """Merge the LoRA adapter in `adapter_dir` into its base and save a plain transformers model in `out_dir`.

    base: the base model (default: adapter_config's base_model_name_or_path).
    dtype: dtype of the saved weights (bf16: half the disk of fp32; the fidelity report says what it costs).
    qlora: the adapter was trained on a 4-bit base (default: read from the run's finetune_config.yaml);
        it is then merged into the dequantized NF4 weights it was trained against, not the original ones.
    check: compare with the adapter model on `prompts` (validation rows or strings; default built-ins),
        write merge_fidelity.json and raise when the saved model is beyond `tolerance`.
    """
    from ftlab.models import default_compute_dtype, load_model

    base = base or adapter_config(adapter_dir)["base_model_name_or_path"]
    qlora = trained_in_4bit(adapter_dir) if qlora is None else qlora
    prompts = prompts or BUILTIN_PROMPTS
    ref_dtype = default_compute_dtype() if qlora else torch.float32  # what the adapter model computes in
    # transformers, never Unsloth: a merge must not depend on how the training ran
    model, tok = load_model(base, load_in_4bit=qlora, dtype=torch.float32, compute_dtype=ref_dtype,
                            backend="transformers", verbose=False)
    work = dequantize(copy.deepcopy(model)) if qlora else model  # copy before a forward repacks 4-bit layers
    reference = PeftModel.from_pretrained(model, adapter_dir).eval()
    ref_out = outputs(reference, tok, prompts) if check else None
    if qlora:
        del reference, model
        reference = PeftModel.from_pretrained(work, adapter_dir)
    merged = merge(reference)  # in place: the reference outputs were taken first

    report = {"base": base, "quantized_base": qlora, "dtype": str(dtype).removeprefix("torch."),
              "max_mean_kl": tolerance(ref_dtype, dtype)}
    if check:  # the merge itself, before rounding to `dtype`
        report["fp32_merge"] = compare(ref_out, outputs(merged, tok, prompts))
    size = weights_size(merged, dtype)
    check_disk(out_dir, size)
    out_dir = Path(out_dir)
    merged.to(dtype).save_pretrained(out_dir)  # model.safetensors, config.json, generation_config.json
    tok.save_pretrained(out_dir)  # tokenizer files and chat_template.jinja
    if check:  # what users will load: the saved folder through plain transformers
        report["saved_model"] = compare(ref_out, outputs(load_merged(out_dir), tok, prompts))
        (out_dir / "merge_fidelity.json").write_text(json.dumps(report, indent=2))
        if report["saved_model"]["mean_kl"] > report["max_mean_kl"]:
            raise ValueError(
                f"the merged model in {out_dir} differs from the adapter model: mean KL "
                f"{report['saved_model']['mean_kl']:.2g} > {report['max_mean_kl']:g} nats per token (fp32 merge: "
                f"{report['fp32_merge']['mean_kl']:.2g}). Fix: check that `base` and `qlora` match the "
                "training run; if only saving costs this much, save with dtype=torch.float32."
            )
    return MergeResult(out_dir, base, qlora, dtype, size, report)


def load_merged(path):
    """The merged model as anyone would load it: plain transformers, in the dtype it was saved in."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()


# --- several adapters on one base ------------------------------------------------------------------

def load_adapters(base_model, adapters: dict) -> PeftModel:
    """Wrap `base_model` in a PeftModel holding every adapter in {name: run_dir}; the first is active."""
    (first, first_dir), *rest = adapters.items()
    model = PeftModel.from_pretrained(base_model, first_dir, adapter_name=first)
    for name, path in rest:
        model.load_adapter(path, adapter_name=name)
    return model.eval()


def use_adapter(model: PeftModel, name: str) -> PeftModel:
    """Make adapter `name` the active one (the others stay loaded)."""
    if name not in model.peft_config:
        raise KeyError(f"no adapter {name!r}: loaded are {sorted(model.peft_config)}. Fix: load_adapters first.")
    model.set_adapter(name)
    return model


@contextmanager
def disabled(model: PeftModel):
    """Inside this block the base model answers, every adapter bypassed."""
    with model.disable_adapter():
        yield model


@contextmanager
def answering_as(model, adapter):
    """Inside: `model` answers with `adapter` (False: every adapter off; None: as it is). Then as before."""
    if adapter is None:
        yield model
    elif adapter is False:
        with disabled(model):
            yield model
    else:
        previous = model.active_adapter
        use_adapter(model, adapter)
        try:
            yield model
        finally:
            model.set_adapter(previous)


def delete_adapter(model: PeftModel, name: str) -> PeftModel:
    """Remove adapter `name` and free its weights (PEFT refuses to delete the last one)."""
    model.delete_adapter(name)
    return model


# Which add_weighted_adapter types need what (peft 0.21):
#   linear, ties, dare_*, magnitude_prune: all adapters must have the same rank (they add A and B matrices
#     entry by entry); the ties/dare/magnitude_prune ones also need `density` in (0, 1], the share of each
#     update they keep.
#   cat: any ranks; the result has rank = sum of ranks and is exactly sum_i w_i * B_i A_i.
#   svd: any ranks; forms sum_i w_i * B_i A_i and truncates it by SVD to the largest rank (slow on big layers).
DENSITY_TYPES = {"ties", "dare_linear", "dare_ties", "magnitude_prune"}
SAME_RANK_TYPES = DENSITY_TYPES | {"linear"}


def combine_adapters(model: PeftModel, names: list[str], weights: list[float], name: str = "combined",
                     combination_type: str = "linear", density: float | None = None) -> PeftModel:
    """Add adapter `name` = weighted combination of adapters `names` (PEFT add_weighted_adapter) and activate it."""
    ranks = {n: model.peft_config[n].r for n in names}
    if combination_type in SAME_RANK_TYPES and len(set(ranks.values())) > 1:
        raise ValueError(f"{combination_type!r} adds the LoRA matrices entry by entry, so all ranks must match "
                         f"(got {ranks}). Fix: combination_type='cat' or 'svd', which accept any ranks.")
    if combination_type in DENSITY_TYPES and density is None:
        raise ValueError(f"{combination_type!r} prunes each update before combining: pass density in (0, 1], "
                         "e.g. density=0.5 keeps half of each adapter's entries.")
    model.add_weighted_adapter(names, weights, name, combination_type=combination_type, density=density)
    model.set_adapter(name)
    return model
