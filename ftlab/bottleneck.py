"""Bottleneck adapters (Houlsby et al. 2019), the adapter layers LoRA displaced: method=adapter.

Each adapter is a small residual block inserted after a sublayer's output, before the decoder layer adds
it to the residual stream:  h -> h + up(gelu(down(h))),  down: hidden -> r, up: r -> hidden.
`up` starts at zero, so every adapter starts as the identity and the adapted model is the base model.
Placements: "houlsby" puts one after the attention and one after the MLP of every layer; "pfeiffer"
(Pfeiffer et al. 2021) only after the MLP, half the parameters. The base stays frozen.

Unlike LoRA's B A, the gelu sits between the two matrices, so the adapter cannot be folded into the base
weights: it stays in the forward pass, and costs time at inference (notebook 07 times it).
PEFT has no bottleneck adapter and AdapterHub's `adapters` pins transformers 4, so ftlab holds this one.
`add_bottlenecks`, `save_bottlenecks`, `load_bottlenecks`; `disabled_bottlenecks` switches them off.
Leaves out: parallel adapters, adapter fusion, other architectures than Llama-style decoders.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PLACEMENTS = {"houlsby": ("self_attn", "mlp"), "pfeiffer": ("mlp",)}  # sublayers whose output is adapted
WEIGHTS, CONFIG = "bottleneck_adapters.safetensors", "bottleneck_config.json"  # in the run folder


class Bottleneck(nn.Module):
    """h + up(gelu(down(h))) over the last dimension; fp32 weights, like PEFT's adapters."""

    def __init__(self, hidden: int, r: int, device=None):
        super().__init__()
        self.down = nn.Linear(hidden, r, device=device, dtype=torch.float32)  # (r, hidden)
        self.up = nn.Linear(r, hidden, device=device, dtype=torch.float32)  # (hidden, r)
        nn.init.zeros_(self.up.weight)  # the identity at the start: training begins from the base model
        nn.init.zeros_(self.up.bias)
        self.enabled = True

    def forward(self, h):  # h: (batch, length, hidden), the base's dtype
        if not self.enabled:
            return h
        update = self.up(F.gelu(self.down(h.to(self.down.weight.dtype))))  # (batch, length, hidden)
        return h + update.to(h.dtype)


class Adapted(nn.Module):
    """A sublayer (self_attn or mlp) followed by its Bottleneck; the sublayer's other outputs pass through."""

    def __init__(self, sublayer: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.sublayer, self.adapter = sublayer, adapter

    def forward(self, *args, **kwargs):
        out = self.sublayer(*args, **kwargs)
        if isinstance(out, tuple):  # attention returns (output, weights)
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


def _layers(model) -> nn.ModuleList:
    decoder = model.get_decoder()
    if not hasattr(decoder, "layers") or not all(hasattr(layer, "mlp") for layer in decoder.layers):
        raise ValueError(f"{type(model).__name__} has no Llama-style decoder layers (layers[i].self_attn, .mlp): "
                         "method=adapter inserts its blocks there. Fix: use method=lora for this model")
    return decoder.layers


def add_bottlenecks(model, r: int = 64, placement: str = "houlsby"):
    """`model` with a Bottleneck of size r after each placed sublayer of every layer; only those train."""
    if placement not in PLACEMENTS:
        raise ValueError(f"adapter_placement={placement!r}: use one of {', '.join(PLACEMENTS)}")
    if bottlenecks(model):
        raise ValueError("this model already has bottleneck adapters: load the base model again first")
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    for layer in _layers(model):
        for name in PLACEMENTS[placement]:
            setattr(layer, name, Adapted(getattr(layer, name), Bottleneck(model.config.hidden_size, r, device)))
    model.bottleneck_config = {"r": r, "placement": placement}
    return model


def bottlenecks(model) -> dict[str, Bottleneck]:
    """{module name: Bottleneck} of every adapter in `model` (empty when it has none)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Bottleneck)}


def save_bottlenecks(model, folder) -> Path:
    """Only the adapters' weights (bottleneck_adapters.safetensors) and their config; the base is not copied."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"{name}.{key}": t.detach().contiguous().cpu()
             for name, m in bottlenecks(model).items() for key, t in m.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    base = getattr(model.config, "_name_or_path", None)
    (folder / CONFIG).write_text(json.dumps({**model.bottleneck_config, "base_model": base}, indent=2))
    return folder / WEIGHTS


def load_bottlenecks(model, folder):
    """`model` (the base) with the adapters a run folder saved; strict: every saved tensor must find its place."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ValueError(f"{folder} has no {CONFIG}: not a method=adapter run folder")
    config = json.loads((folder / CONFIG).read_text())
    add_bottlenecks(model, config["r"], config["placement"])
    state = load_file(folder / WEIGHTS)  # {"model.layers.0.mlp.adapter.down.weight": tensor, ...}
    modules = bottlenecks(model)
    if len(state) != 4 * len(modules):  # down and up, weight and bias, per adapter
        raise ValueError(f"{folder / WEIGHTS} holds {len(state)} tensors, not the {4 * len(modules)} of "
                         f"{len(modules)} adapters: was it saved from {config.get('base_model')}?")
    for name, m in modules.items():
        m.load_state_dict({k.removeprefix(name + "."): v for k, v in state.items() if k.startswith(name + ".")})
    return model


@contextmanager
def disabled_bottlenecks(model):
    """Inside this block every bottleneck adapter is the identity: the base model answers."""
    modules = list(bottlenecks(model).values())
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m in modules:
            m.enabled = True
