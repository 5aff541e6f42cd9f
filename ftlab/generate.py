"""Generate answers with the chat template applied exactly as in training.

`chat(model, tokenizer, prompt)` for one answer (optionally streamed token by token),
`generate_batch(...)` for many greedy answers at once (left padding), used by evaluation, and
`generate_with_stops` for the same answers with whether each one ended at the end-of-turn token.
"""

from __future__ import annotations

import torch
from transformers import TextStreamer


def _as_messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def chat(model, tokenizer, prompt, *, max_new_tokens: int = 128, do_sample: bool = False,
         temperature: float = 0.7, top_p: float = 0.9, stream: bool = False) -> str:
    """The assistant's reply to `prompt` (a string or a list of messages). Greedy unless do_sample."""
    enc = tokenizer.apply_chat_template(_as_messages(prompt), add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True).to(_device(model))
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    out = model.generate(**enc, max_new_tokens=max_new_tokens, streamer=streamer,
                         pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def generate_batch(model, tokenizer, prompts: list, *, max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy replies to many prompts; each prompt is a string or a list of messages."""
    return generate_with_stops(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)[0]


def _ends_at(ids: list[int], eos: int, pad: int | None) -> bool:
    """The reply holds `eos` and nothing but eos/pad after it: it stopped there (not just passed by)."""
    return eos in ids and all(t in (eos, pad) for t in ids[ids.index(eos):])


@torch.inference_mode()
def generate_with_stops(model, tokenizer, prompts: list, *, max_new_tokens: int = 32,
                        batch_size: int = 16) -> tuple[list[str], list[bool]]:
    """(greedy replies, whether each one ended with tokenizer.eos_token: False means it ran to max_new_tokens)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow the prompt directly
    replies, stopped = [], []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(_as_messages(p), add_generation_prompt=True, tokenize=False)
                     for p in prompts[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(_device(model))
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]  # (batch, <= max_new_tokens); finished rows padded after eos
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            stopped += [_ends_at(row, tokenizer.eos_token_id, tokenizer.pad_token_id) for row in new.tolist()]
    finally:
        tokenizer.padding_side = side
    return replies, stopped
