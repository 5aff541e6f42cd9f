"""How much of a LoRA training step the LoRA products themselves take: the ceiling on fusing or batching them.

Fused or batched A/B products (one x @ [A_q; A_k; A_v] for the three projections that read the same input,
say) can only save time inside the LoRA layers. This measures that time on ftlab's CPU path, in one
process, in turns, on the same real data/dates batch (ftlab's loss mask, padding masked):
- with LoRA: a PEFT LoRA model (r=16, alpha 32, all-linear, eager attention as ftlab picks for short rows),
  forward and backward of the training loss;
- without: the same model with the adapter switched off (PEFT then runs only each base layer) and the
  embedding output requiring gradients, so the backward still runs through every layer as LoRA's does.
The difference is what every LoRA product, its gradients and its additions cost together; printed with both
step times and its share of the LoRA step. Fusing can only remove part of it (the launches and small-matrix
overhead, not the arithmetic). The loss goes through the model's own LM head at every position, where
ftlab's path scores only the answer positions: its steps are shorter, so LoRA's share of them is larger
by that ratio.

  python benchmarks/lora_share.py            # batch of 8 chats, 5 turns
  python benchmarks/lora_share.py --tiny     # batch of 2, 1 turn
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.turns = 2, 1

    from peft import LoraConfig, get_peft_model
    from preference_scoring import processor

    from ftlab import load_model
    from ftlab.evaluation import _batch
    from ftlab.hardware import choose_precision
    from ftlab.speed import autocast
    from ftlab.tasks import load_split

    model, tok = load_model(verbose=False)
    model.set_attn_implementation("eager")
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    ids, attn, mask = _batch(load_split("dates", "train")[: args.batch], tok, 512)
    labels = ids.masked_fill(mask == 0, -100)
    precision = choose_precision()

    def step(lora: bool) -> float:
        start = time.perf_counter()
        if lora:
            with autocast(precision):
                loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        else:
            with model.disable_adapter(), autocast(precision):
                loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    # the embedding output requires gradients on both sides: the backward reaches the first layer either way
    embed_hook = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    step(True), step(False)  # warm-up: allocator, first-call costs
    times = {True: [], False: []}
    for _ in range(args.turns):
        for lora in (True, False):
            times[lora].append(step(lora))
    embed_hook.remove()
    with_lora, without = statistics.median(times[True]), statistics.median(times[False])
    n_tokens = int(attn.sum())
    print(f"one training step, {args.batch} chats ({n_tokens} tokens, padded to {ids.shape[1]}), r={args.r}, "
          f"all-linear; median of {args.turns}; {processor()}; {precision.reason}")
    print(f"{'with LoRA':<26}{with_lora:>8.3f} s")
    print(f"{'adapter off (base only)':<26}{without:>8.3f} s")
    print(f"{'with / without':<26}{with_lora / without:>8.3f}x   LoRA's own share of the step: "
          f"{(with_lora - without) / with_lora:.1%} (the most that fusing its products could remove)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside it
    sys.exit(main())
