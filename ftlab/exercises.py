"""Checks for the course's exercises: each runs the learner's function against the library.

`check_...(fn)` calls the learner's function on inputs it builds itself and compares the result with what
the library (PEFT, torch, TRL's logs, ftlab's own scorers) computes for the same inputs. It returns a `Check`:
true when the function does what its exercise asks, with what was compared. A wrong answer, an exception or
a stub still returning None gives a `Check` that says "not yet" and why; nothing raises, so a notebook
runs on with the stub in place. notebooks/solutions.ipynb asserts on every check with the solutions.
Leaves out: the exercises' text (in the notebooks) and their solutions (notebooks/src, cells tagged
"solution", built into notebooks/solutions.ipynb).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass

import torch


@dataclass
class Check:
    exercise: str
    passed: bool
    detail: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'passed' if self.passed else 'not yet'} ({self.exercise}): {self.detail}"


def _call(fn, *args, **kwargs):
    """(result, None), or (None, why) when fn raised or is still the stub (returned None)."""
    name = getattr(fn, "__name__", "your function")
    try:
        out = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the learner's code: any error is an answer to report
        return None, f"{name}{_short(args)} raised {type(e).__name__}: {e}"
    if out is None:
        return None, f"{name} returned None: replace the `return None` with your code"
    return out, None


def _short(args) -> str:
    shown = ", ".join(f"tensor{tuple(a.shape)}" if isinstance(a, torch.Tensor) else repr(a) for a in args)
    return f"({shown[:120]})"


def _tensor(out, name: str, shape) -> str | None:
    if not isinstance(out, torch.Tensor):
        return f"{name} returned a {type(out).__name__}, expected a tensor of shape {tuple(shape)}"
    if tuple(out.shape) != tuple(shape):
        return f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)}"
    return None


def _tiny_llama(seed: int = 0):
    """A real transformers Llama with random weights, small enough to build in milliseconds (on the CPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):  # seeded here, the notebook's own random state left as it was
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def _with_adapter(model, *overrides: str):
    """ftlab's own PEFT model for `overrides` (method, r, ...) on the transformers backend (any machine)."""
    from ftlab.adapters import add_adapter
    from ftlab.config import load_config, resolve

    cfg = resolve(load_config(None, ["backend=transformers", "lora_dropout=0.0", *overrides]))
    return add_adapter(model, cfg), cfg


# ------------------------------------------------------------------------------------------ 00: ordinals

_ONES = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
_TEENS = ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
          "eighteenth", "nineteenth"]


def _ordinal_days() -> dict[str, int]:
    words = dict(zip(_ONES + _TEENS, range(1, 20)))
    words |= {"twentieth": 20, "thirtieth": 30, "thirty-first": 31}
    words |= {f"twenty-{w}": 20 + n for n, w in enumerate(_ONES, 1)}
    return words


def check_day_number(fn) -> Check:
    """fn('twenty-first') == 21 for every day of a month, in any case and with a space for the hyphen."""
    cases = _ordinal_days()
    cases |= {w.title(): n for w, n in list(cases.items())[::5]} | {"twenty third": 23, "Thirty First": 31}
    wrong = []
    for word, want in cases.items():
        got, why = _call(fn, word)
        if why:
            return Check("day_number", False, why)
        if got != want:
            wrong.append(f"{word!r} -> {got!r} (want {want})")
    if wrong:
        return Check("day_number", False, f"{len(wrong)} of {len(cases)} words wrong: {'; '.join(wrong[:4])}")
    return Check("day_number", True, f"all {len(cases)} spellings of the 31 days right")


# ------------------------------------------------------------------------------------------ 01: Alpaca rows

def check_alpaca_to_messages(fn) -> Check:
    """fn(row) gives the same messages as ftlab.formats.convert_row(row, 'alpaca') on every valid row of the
    shipped formats/alpaca.json (the rows the library rejects are skipped: they have no right answer)."""
    from ftlab.formats import BadRow, convert_row
    from ftlab.tasks import DATA_DIR

    rows = json.loads((DATA_DIR / "formats" / "alpaca.json").read_text())
    rows += [{"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be brief."},
             {"instruction": "Add them.", "input": "2 and 3", "output": "5"}]  # a system prompt; an input
    compared = skipped = 0
    for i, row in enumerate(rows):
        try:
            want = convert_row(row, "alpaca")["messages"]
        except BadRow:
            skipped += 1
            continue
        got, why = _call(fn, copy.deepcopy(row))
        if why:
            return Check("alpaca_to_messages", False, f"row {i}: {why}")
        if got != want:
            return Check("alpaca_to_messages", False, f"row {i} {row}: got {got}, the library gives {want}")
        compared += 1
    return Check("alpaca_to_messages", True, f"{compared} rows the same as the library's ({skipped} invalid rows "
                                             "skipped)")


# ------------------------------------------------------------------------------------------ 02: rsLoRA forward

def check_rslora_forward(fn) -> Check:
    """fn(x, W, A, B, alpha, r) is the output of a PEFT rsLoRA layer (scale alpha / sqrt(r)) on x."""
    peft_model, cfg = _with_adapter(_tiny_llama(), "method=rslora", "r=4", "lora_alpha=8",
                                    "target_modules=k_proj")
    layer = peft_model.base_model.model.model.layers[0].self_attn.k_proj  # 32 -> 16: W is not square
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero in PEFT: give it values, or any scale would pass
        layer.lora_B["default"].weight.copy_(torch.randn(layer.lora_B["default"].weight.shape, generator=generator))
        x = torch.randn(3, layer.in_features, generator=generator)  # (batch, d_in)
        want = layer(x)  # (batch, d_out)
        W, A, B = (t.detach().clone() for t in (layer.base_layer.weight, layer.lora_A["default"].weight,
                                                layer.lora_B["default"].weight))
        got, why = _call(fn, x, W, A, B, cfg.lora_alpha, cfg.r)
    why = why or _tensor(got, "rslora_forward", want.shape)
    if why:
        return Check("rslora_forward", False, why)
    err = (got - want).abs().max().item()
    if err > 1e-5:
        plain = x @ W.T + cfg.lora_alpha / cfg.r * (x @ A.T @ B.T)
        hint = " (that is plain LoRA's alpha / r)" if torch.allclose(got, plain, atol=1e-5) else ""
        return Check("rslora_forward", False, f"max difference from PEFT's rsLoRA layer {err:.2e}{hint}")
    return Check("rslora_forward", True, f"equal to PEFT's rsLoRA layer (max difference {err:.1e}, scale "
                                         f"{layer.scaling['default']:g})")


# ------------------------------------------------------------------------------------------ 03: uniform 4-bit

def check_uniform_4bit(fn) -> Check:
    """fn(w, block=64) rounds each block of 64 weights to the nearest of 16 evenly spaced levels in
    [-absmax, absmax] of that block and returns the rounded weights (same shape as w)."""
    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(3)) * 0.02  # like a layer's weights
    got, why = _call(fn, w.clone(), 64)
    why = why or _tensor(got, "uniform_4bit", w.shape)
    if why:
        return Check("uniform_4bit", False, why)
    blocks, rounded = w.reshape(-1, 64), got.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    levels = torch.linspace(-1, 1, 16)  # the 16 levels, times each block's absmax
    want = levels[(blocks / absmax).unsqueeze(-1).sub(levels).abs().argmin(-1)] * absmax
    distinct = max(b.unique().numel() for b in rounded)
    if distinct > 16:
        return Check("uniform_4bit", False, f"a block of 64 has {distinct} distinct values: 4 bits give 16")
    err = (rounded - want).abs().max().item()
    if err > 1e-7:
        return Check("uniform_4bit", False, f"max difference from the nearest evenly spaced level {err:.2e}")
    from ftlab.quant import nf4_roundtrip

    rel = ((got - w).norm() / w.norm()).item()
    nf4 = ((nf4_roundtrip(w, 64) - w).norm() / w.norm()).item()
    return Check("uniform_4bit", True, f"the nearest of 16 levels in every block; relative error on these "
                                       f"Gaussian weights: uniform {rel:.3f}, NF4 (bitsandbytes) {nf4:.3f}")


# ------------------------------------------------------------------------------------------ 04: linear merge

def check_linear_merge(fn) -> Check:
    """fn(As, Bs, weights, scalings) is the weight update of PEFT's add_weighted_adapter(..., 'linear')
    (ftlab.merge.combine_adapters) of adapters with matrices As[i] (r, d_in), Bs[i] (d_out, r)."""
    from ftlab.adapters import peft_config
    from ftlab.merge import combine_adapters

    base = _tiny_llama()
    model, cfg = _with_adapter(copy.deepcopy(base), "r=4", "lora_alpha=8", "target_modules=q_proj")
    model.add_adapter("numbers", peft_config(cfg, base))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    generator = torch.Generator().manual_seed(4)
    names, weights = ["default", "numbers"], [1.0, 0.5]
    with torch.no_grad():
        for name in names:
            for part in (layer.lora_A[name], layer.lora_B[name]):
                part.weight.copy_(torch.randn(part.weight.shape, generator=generator))
    combine_adapters(model, names, weights, "combined", combination_type="linear")
    want = layer.get_delta_weight("combined").detach()  # (d_out, d_in)
    As = [layer.lora_A[n].weight.detach().clone() for n in names]
    Bs = [layer.lora_B[n].weight.detach().clone() for n in names]
    scalings = [layer.scaling[n] for n in names]
    got, why = _call(fn, As, Bs, weights, scalings)
    why = why or _tensor(got, "linear_merge", want.shape)
    if why:
        return Check("linear_merge", False, why)
    naive = sum(w * s * B @ A for w, s, A, B in zip(weights, scalings, As, Bs))  # the weighted sum of updates
    rel = ((got - want).norm() / want.norm()).item()
    if rel > 1e-5:
        hint = " (that is the weighted sum of the updates, 'cat')" if torch.allclose(got, naive, atol=1e-5) else ""
        return Check("linear_merge", False, f"relative difference from PEFT's 'linear' update {rel:.2e}{hint}")
    cross = ((want - naive).norm() / naive.norm()).item()
    return Check("linear_merge", True, f"equal to PEFT's 'linear' update; it differs from the weighted sum of "
                                       f"the two updates by {cross:.0%} (the cross terms B_i A_j)")


# ------------------------------------------------------------------------------------------ 05: ISO shape

ISO_SHAPE_CASES = ["2021-03-03", " 2021-03-03\n", "2021-03-03.", '"2021-03-03"', "2021-02-30", "1999-13-45",
                   "2021-3-3", "03/03/2021", "20210303", "The date is 2021-03-03", "2021-03-03 and 2021-03-04",
                   "2021-03-03T10:00", "", "YYYY-MM-DD", "２０２１-03-03"]


def check_iso_shape(fn) -> Check:
    """bool(fn(answer)) says whether the answer, once tidied as exact match tidies it (ftlab.tasks.normalize),
    is shaped YYYY-MM-DD (digits; right or wrong date, real or not), on ISO_SHAPE_CASES."""
    from ftlab.rewards import ISO_DATE
    from ftlab.tasks import normalize

    wrong = []
    for answer in ISO_SHAPE_CASES:
        want = ISO_DATE.fullmatch(normalize(answer)) is not None
        got, why = _call(fn, answer)
        if why:
            return Check("iso_shape", False, why)
        if bool(got) != want:
            wrong.append(f"{answer!r} -> {got!r} (want {want})")
    if wrong:
        return Check("iso_shape", False, f"{len(wrong)} of {len(ISO_SHAPE_CASES)} answers wrong: "
                                         f"{'; '.join(wrong[:4])}")
    return Check("iso_shape", True, f"agrees with the evaluation's tidying on all {len(ISO_SHAPE_CASES)} answers")


# ------------------------------------------------------------------------------------------ 06: DPO loss

def check_dpo_loss(fn, history=None, beta: float = 0.1) -> Check:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> the mean sigmoid DPO loss over
    the batch (1-D tensors of summed answer log-probabilities). Checked on fixed values, then, with
    `history` (a DPO run's log, ftlab's `result.history`, trained with this `beta`), against the loss TRL
    logged at each step."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(6)
    for b in (0.1, 0.5):
        pc, pr, rc, rr = (-torch.rand(5, generator=generator) * 20 for _ in range(4))  # log-probs < 0
        want = (-F.logsigmoid(b * ((pc - rc) - (pr - rr)))).mean().item()
        got, why = _call(fn, pc, pr, rc, rr, b)
        if why:
            return Check("dpo_loss", False, why)
        got = torch.as_tensor(got, dtype=torch.float32)
        if got.numel() != 1:
            return Check("dpo_loss", False, f"returned {got.numel()} values: average over the batch")
        if abs(got.item() - want) > 1e-5:
            return Check("dpo_loss", False, f"beta={b}: got {got.item():.5f}, the DPO loss is {want:.5f}")
    keys = {"loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"}
    steps = [h for h in history or () if keys <= h.keys()]
    if not steps:
        return Check("dpo_loss", True, "right on fixed log-probabilities" +
                     ("" if history is None else " (no logged DPO step in `history` to compare with)"))
    shown = []
    for h in steps:
        # TRL logs batch means, and rewards = beta * (policy - reference): the reference follows from them
        pc, pr = torch.tensor([h["logps/chosen"]]), torch.tensor([h["logps/rejected"]])
        rc, rr = pc - h["rewards/chosen"] / beta, pr - h["rewards/rejected"] / beta
        got, why = _call(fn, pc, pr, rc, rr, beta)
        if why:
            return Check("dpo_loss", False, why)
        # the loss is convex in the margin, so the loss at the batch's mean margin is at most TRL's mean loss
        # (Jensen), and equal when every pair has the same margin (step 1: all 0, loss log 2 = 0.6931)
        if float(got) > h["loss"] + 1e-3:
            return Check("dpo_loss", False, f"step {h.get('step')}: your loss at the batch's mean margin "
                                            f"{float(got):.4f} is above TRL's logged loss {h['loss']:.4f}")
        shown.append(f"step {h.get('step')}: TRL {h['loss']:.4f}, yours {float(got):.4f}")
    return Check("dpo_loss", True, f"right on fixed log-probabilities; at the mean margin of each of the "
                                   f"{len(steps)} logged steps at most TRL's logged loss, as it must be "
                                   f"({'; '.join(shown[:2])})")


# ------------------------------------------------------------------------------------------ 07: IA3 count

def check_ia3_parameters(fn) -> Check:
    """fn(model, targets, feedforward) counts IA3's trained weights on `model` (not yet wrapped): one
    vector per targeted linear layer, of its output size, or of its input size for a feed-forward layer.
    Compared with PEFT's IA3 on a small Llama, as ftlab builds it (method=ia3, all linear layers)."""
    from ftlab.adapters import linear_module_names, trainable_parameters

    base = _tiny_llama()
    targets = linear_module_names(base)
    peft_model, _ = _with_adapter(copy.deepcopy(base), "method=ia3")
    feedforward = sorted(peft_model.peft_config["default"].feedforward_modules)
    want = trainable_parameters(peft_model)[0]
    got, why = _call(fn, base, targets, feedforward)
    if why:
        return Check("ia3_parameters", False, why)
    if got != want:
        return Check("ia3_parameters", False, f"counted {got!r}, PEFT's IA3 trains {want:,} weights on this "
                                              f"model (targets {targets}, feed-forward {feedforward})")
    return Check("ia3_parameters", True, f"{want:,} weights, as PEFT counts them")


# ------------------------------------------------------------------------------------------ 08: steps per epoch

STEPS_CASES = [(2000, 8, 1, 1), (2000, 4, 1, 2), (100, 3, 2, 2), (10, 4, 1, 4), (1001, 8, 4, 2), (5, 8, 1, 1)]


def _steps_by_counting(n_rows: int, per_device: int, accumulation: int, processes: int) -> int:
    """Optimizer steps per epoch as torch's DistributedSampler + DataLoader batch the rows, with the
    Trainer's rule for the last, incomplete accumulation (it still makes a step)."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(range(n_rows), num_replicas=processes, rank=0, shuffle=False)
    batches = len(DataLoader(range(n_rows), batch_size=per_device, sampler=sampler))
    return math.ceil(batches / accumulation)


def check_steps_per_epoch(fn) -> Check:
    """fn(n_rows, per_device, accumulation, processes) is the number of optimizer steps in one epoch."""
    wrong = []
    for case in STEPS_CASES:
        want = _steps_by_counting(*case)
        got, why = _call(fn, *case)
        if why:
            return Check("steps_per_epoch", False, why)
        if got != want:
            wrong.append(f"{case} -> {got!r} (want {want})")
    if wrong:
        return Check("steps_per_epoch", False, f"{len(wrong)} of {len(STEPS_CASES)} cases wrong: "
                                               f"{'; '.join(wrong[:3])}")
    return Check("steps_per_epoch", True, f"all {len(STEPS_CASES)} cases equal to counting the batches "
                                          "(DistributedSampler + DataLoader)")


# ------------------------------------------------------------------------------------------ 09: a reward

def check_reward(fn, completions, answer, expected) -> Check:
    """fn, a TRL reward function, gives `expected` on `completions` (strings or chat messages) against the
    reference dates `answer`, run through ftlab.rewards.checked as GRPO runs it."""
    from ftlab.rewards import RewardError, checked

    name = getattr(fn, "__name__", "reward")
    try:
        got = checked(fn)(prompts=None, completions=list(completions), answer=list(answer))
    except RewardError as e:  # checked() names the function and the completion that broke it
        return Check(name, False, f"{type(e).__name__}: {e}")
    wrong = [f"{c!r} -> {g} (want {w})" for c, g, w in zip(completions, got, expected) if g is None or
             abs(g - w) > 1e-9]
    if wrong:
        return Check(name, False, f"{len(wrong)} of {len(expected)} rewards wrong: {'; '.join(wrong[:3])}")
    return Check(name, True, f"all {len(expected)} rewards as expected, with TRL's calling convention")
