"""Scoring answers: the full logits against ftlab's answer positions only, on the held-out preference pairs.

Notebook 06 ranks the 50 held-out pairs of data/dates/preference_test.jsonl with five models
(ftlab.evaluation.preference_accuracy): one forward per chat, summed log-probability of the answer's tokens.
- A, the usual way: `model(...).logits`, log_softmax over the 49k vocabulary at every position, then gather;
- B, ftlab.evaluation.answer_logprobs: the decoder, then lm_head and the softmax only at the positions that
  predict an answer token (a date is ~8 of a chat's ~60 tokens).
Both sides run in this process, in turns (A, B, A, B, ...), on the same model and chats; printed side by side
with the best time of each, the ratio and the largest difference between their log-probabilities.

  python benchmarks/preference_scoring.py            # 100 chats (50 pairs, chosen and rejected), 3 turns
  python benchmarks/preference_scoring.py --tiny     # 8 chats, 1 turn
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


@torch.inference_mode()
def full_logits(model, tokenizer, chats, batch_size: int = 8, max_length: int = 512) -> list[float]:
    """Side A: every position's logits, log_softmax over the vocabulary, the answer tokens gathered."""
    from ftlab.evaluation import _batch

    out = []
    for i in range(0, len(chats), batch_size):
        ids, attn, mask = _batch(chats[i:i + batch_size], tokenizer, max_length)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (batch, length - 1, vocab)
        token_logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out += (token_logp * mask[:, 1:]).sum(-1).tolist()
    return out


def processor() -> str:
    """The processor, as time_to_quality prints it: name, bf16 instructions, cores; and torch's threads."""
    from time_to_quality import processor as described

    cpu = described()
    return (f"{cpu['name']}, {cpu['cores']} cores, bf16 instructions: {cpu['bf16_instructions']}, "
            f"{torch.get_num_threads()} torch threads")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.pairs, args.turns = 4, 1

    from ftlab import load_model
    from ftlab.data import read_rows
    from ftlab.evaluation import answer_logprobs

    pairs = read_rows(ROOT / "data" / "dates" / "preference_test.jsonl")[: args.pairs]
    chats = [p["prompt"] + p[k] for p in pairs for k in ("chosen", "rejected")]
    model, tokenizer = load_model(verbose=False)
    model.eval()
    sides = {"A full logits": full_logits, "B answer positions": answer_logprobs}
    best, values = dict.fromkeys(sides, float("inf")), {}
    for _ in range(args.turns):
        for name, fn in sides.items():
            start = time.perf_counter()
            values[name] = fn(model, tokenizer, chats)
            best[name] = min(best[name], time.perf_counter() - start)
    a, b = best.values()
    diff = max(abs(x - y) for x, y in zip(*values.values()))
    print(f"{len(chats)} chats ({args.pairs} pairs), best of {args.turns}; {processor()}; torch {torch.__version__}")
    for name, seconds in best.items():
        print(f"{name:<22}{seconds:>8.2f} s")
    print(f"{'A / B':<22}{a / b:>8.2f}x   largest |difference| of a log-probability: {diff:.2e} nats")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # time_to_quality and train_throughput beside it
    sys.exit(main())
