"""Show which tokens of one chat carry loss when training on assistant turns only, and warn about the pitfalls.

`loss_mask(example, tokenizer)` renders the chat with the tokenizer's chat template and marks the tokens
of every assistant answer plus the end-of-turn token right after it: the model must learn to stop.
Templates with `{% generation %}` blocks give the mask directly (`return_assistant_tokens_mask`); others
(SmolLM2's among them) are handled by rendering the chat before each answer and finding the answer's
characters in the full text. Leaves out: batching, padding and collators (TRL's job); this is for looking.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from ftlab.formats import conversations, convert_row, detect_format

# Shown (with a warning) when a tokenizer has none; a base model's tokenizer usually has no template.
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_END = re.compile(r"end|eot|eos|</s>", re.IGNORECASE)  # <|im_end|>, <|eot_id|>, <end_of_turn>, </s>, <|end|>


@dataclass
class MaskView:
    input_ids: list[int]
    mask: list[int]  # 1: the token carries loss (an assistant answer or its end-of-turn token), 0: ignored
    tokenizer: object = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    def runs(self) -> list[tuple[str, int]]:
        """(text, 0/1) pieces: consecutive tokens with the same mask value, decoded together."""
        pieces, start = [], 0
        for i in range(1, len(self.mask) + 1):
            if i == len(self.mask) or self.mask[i] != self.mask[start]:
                pieces.append((self.tokenizer.decode(self.input_ids[start:i]), self.mask[start]))
                start = i
        return pieces

    def counts(self) -> str:
        n, k = len(self.mask), sum(self.mask)
        return f"{n} tokens, {k} carry loss ({100 * k / max(n, 1):.0f}%)"

    def text(self) -> str:
        """Plain view for a terminal: loss tokens in [[double brackets]], then counts and warnings."""
        body = "".join(f"[[{t}]]" if loss else t for t, loss in self.runs())
        return "\n".join([body, self.counts()] + [f"warning: {w}" for w in self.warnings])

    def _repr_html_(self) -> str:
        spans = "".join(f'<span style="background:#b7e4c7;color:#000">{html.escape(t)}</span>' if loss
                        else f'<span style="color:#888">{html.escape(t)}</span>' for t, loss in self.runs())
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return (f'<pre style="white-space:pre-wrap">{spans}</pre><p>{self.counts()}; '
                f'<span style="background:#b7e4c7;color:#000">green</span> carries loss</p>'
                + (f'<ul style="color:#b00">{notes}</ul>' if notes else ""))


def loss_mask(example, tokenizer, max_length: int | None = None) -> MaskView:
    """Render one example (any format formats.py reads, or a list of messages) and mark its loss tokens.

    max_length: cut the tokens there, as training would (right truncation), and warn about lost answers.
    Preference rows show the chosen answer.
    """
    msgs = _chat(example)
    notes = []
    template = tokenizer.get_chat_template() if tokenizer.chat_template is not None else None
    if template is None:
        template = CHATML
        notes.append("the tokenizer has no chat template, so this shows a ChatML rendering that training would "
                     "not use: set tokenizer.chat_template (e.g. trl's clone_chat_template) or use an instruct "
                     "model's tokenizer")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        notes.append(f"pad token == EOS ({tokenizer.eos_token!r}): a collator that sets labels to -100 wherever "
                     "input_ids == pad_token_id also masks every EOS, so the model never learns to stop; fix: set "
                     "a distinct pad token, or mask by attention/assistant masks as TRL's collator does")
    if re.search(r"\{%-?\s*generation\s*-?%\}", template):
        enc = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    else:
        ids, mask = _mask_by_prefixes(msgs, tokenizer, template)
    notes += _end_warnings(ids, mask, tokenizer)
    if max_length is not None and len(ids) > max_length:
        kept, total = sum(mask[:max_length]), sum(mask)
        if total and not kept:
            notes.append(f"truncation at max_length={max_length} removes the whole answer (all {total} loss tokens "
                         f"of {len(ids)} tokens): this row trains nothing; raise max_length or shorten the prompt")
        elif kept < total:
            notes.append(f"truncation at max_length={max_length} cuts {total - kept} of {total} loss tokens, the "
                         "end of the answer and its end-of-turn token with them; raise max_length")
        ids, mask = ids[:max_length], mask[:max_length]
    return MaskView(ids, mask, tokenizer, notes)


def _chat(example) -> list[dict]:
    # Validate and convert through formats.py, so a bad example fails with the same reason as in convert().
    row = {"messages": example} if isinstance(example, list) else example
    return conversations(convert_row(row, detect_format([row])))[0]


def _mask_by_prefixes(msgs: list[dict], tokenizer, template: str) -> tuple[list[int], list[int]]:
    """Mask from character spans: each answer starts where the chat rendered up to it (plus the
    generation prompt) ends. Needs a fast tokenizer for offsets."""
    def render(m, gen=False):
        return tokenizer.apply_chat_template(m, chat_template=template, tokenize=False, add_generation_prompt=gen)

    text, spans = render(msgs), []  # spans: (start, end) characters of each answer in text
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = render(msgs[:i], gen=True)
        # a template that rewrites earlier turns breaks the prefix property: then search after the last answer
        after = len(head) if text.startswith(head) else (spans[-1][1] if spans else 0)
        content = m["content"] if m["content"] in text[after:] else m["content"].strip()  # some templates trim
        start = text.find(content, after)
        if start < 0:
            raise ValueError(f"the chat template does not show assistant turn {i} verbatim, so its tokens can't "
                             "be found; use a template with {% generation %} blocks")
        spans.append((start, start + len(content)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the template holds the BOS
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    mask = [0] * len(ids)
    for s, e in spans:
        inside = [t for t, (a, b) in enumerate(offsets) if a < e and b > s]
        for t in inside:
            mask[t] = 1
        if inside and inside[-1] + 1 < len(ids) and ids[inside[-1] + 1] in _end_ids(tokenizer):
            mask[inside[-1] + 1] = 1  # the end-of-turn token: the model learns to stop here
    return ids, mask


def _end_ids(tokenizer) -> set[int]:
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special and _END.search(t.content)}
    return specials | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _end_warnings(ids: list[int], mask: list[int], tokenizer) -> list[str]:
    """One warning per answer whose loss tokens do not end with an end-of-turn token."""
    if not any(mask):
        return [("no token carries loss: the chat template marks no assistant tokens, so training on "
                 "assistant turns only would learn nothing from this row")]
    ends, notes, turn = _end_ids(tokenizer), [], 0
    for i, m in enumerate(mask):
        if m and (i + 1 == len(mask) or not mask[i + 1]):  # last token of a run of loss tokens
            turn += 1
            j = i
            while j > 0 and mask[j - 1] and not tokenizer.decode([ids[j]]).strip():
                j -= 1  # a template may put a newline after the end token inside the loss span
            if ids[j] not in ends:
                notes.append(f"assistant answer {turn} does not end with an end-of-turn/EOS token carrying loss, so "
                             "the model won't learn to stop; fix the chat template to close assistant turns with "
                             f"{tokenizer.eos_token!r}")
    return notes
