"""Recognise the common fine-tuning data formats and turn one row into TRL's conversational form.

Six formats come in (`FORMATS` lists their fields); four forms go out, the ones TRL's trainers read:
  {"messages": [...]}                                   from alpaca, sharegpt, openai
  {"prompt": [...], "completion": [...]}                 from prompt_completion
  {"prompt": [...], "chosen": [...], "rejected": [...]}  from preference
  {"text": "..."}                                        from text (raw text for continued pretraining: no chat)
`convert_row` raises `BadRow(kind, reason)` for a row it cannot convert; the reason names the field
and the fix. Leaves out: reading files, counting tokens and collecting rejects (all in data.py).
A preference row whose chosen and rejected answers are the same (after conversion) is a BadRow too: it
teaches nothing. Also left out: tool calls, multimodal content parts, preference rows without an explicit prompt.
"""

from __future__ import annotations

from collections import Counter

# name: (required fields, optional fields). Detection checks formats in this order, so the
# preference form (prompt + chosen + rejected) wins over prompt_completion, which shares "prompt".
FORMATS = {
    "preference": (("prompt", "chosen", "rejected"), ()),
    "prompt_completion": (("prompt", "completion"), ()),
    "openai": (("messages",), ()),
    "sharegpt": (("conversations",), ("system",)),
    "alpaca": (("instruction", "output"), ("input", "system")),
    "text": (("text",), ()),  # last: a chat file with a stray "text" column is still a chat file
}

# Every spelling of a role seen in public datasets -> the three roles chat templates know.
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant"}


class BadRow(ValueError):
    """A row that cannot be converted. `kind` is a short code ("missing_field", ...), the message the fix."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def detect_format(rows: list[dict]) -> str:
    """The format whose required fields most rows have; ValueError listing all formats if none fits."""
    votes = Counter()
    for row in rows:
        fmt = next((f for f, (need, _) in FORMATS.items() if all(k in row for k in need)), None)
        votes[fmt] += fmt is not None
    if votes and max(votes.values()) > 0:
        return votes.most_common(1)[0][0]
    seen = Counter(k for row in rows for k in row)
    known = "; ".join(f"{f}: {', '.join(need)}" + (f" (optional {', '.join(opt)})" if opt else "")
                      for f, (need, opt) in FORMATS.items())
    fields = ", ".join(f"{k} ({n} rows)" for k, n in seen.most_common()) or "none"
    raise ValueError(f"no known format fits these {len(rows)} rows. Known formats and the fields they need: "
                     f"{known}. Fields seen: {fields}. Rename the columns to one of these formats.")


def convert_row(row: dict, fmt: str) -> dict:
    """`row` in format `fmt` -> TRL conversational form. Raises BadRow; never changes `row`."""
    if fmt == "alpaca":
        out = {"messages": _alpaca(row)}
    elif fmt == "sharegpt":
        out = {"messages": _sharegpt(row)}
    elif fmt == "openai":
        out = {"messages": _chat(row.get("messages"), "messages")}
    elif fmt == "prompt_completion":
        out = _prompt_completion(row)
    elif fmt == "preference":
        out = _preference(row)
    elif fmt == "text":
        out = {"text": _text(row.get("text"), "text")}
    else:
        raise ValueError(f"unknown format {fmt!r}: pick one of {', '.join(FORMATS)}")
    for field in sum(FORMATS[fmt], ()):  # the fields this format reads, named as in the file
        _check_decodable(row.get(field), field)
    return out


def conversations(row: dict) -> list[list[dict]]:
    """The whole chats a converted row renders to: one, or two (chosen, rejected) for preference rows."""
    if "text" in row:
        raise ValueError("a text row is raw text, not a chat: it has no chat-template rendering")
    if "messages" in row:
        return [row["messages"]]
    if "completion" in row:
        return [row["prompt"] + row["completion"]]
    return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]


def _text(value, field: str) -> str:
    if value is None:
        raise BadRow("missing_field", f"field '{field}' is missing (or null): add it, or drop the row")
    if not isinstance(value, str):
        raise BadRow("wrong_type", f"field '{field}' is a {type(value).__name__}, expected a string: "
                                   "quote it or convert it to text")
    if not value.strip():
        raise BadRow("empty_field", f"field '{field}' is empty: fill it in, or drop the row")
    return value


def _message(m, label: str) -> dict:
    # ShareGPT turns use from/value, OpenAI turns role/content; datasets mix them, so accept both.
    if not isinstance(m, dict):
        raise BadRow("wrong_type", f"{label} is a {type(m).__name__}, not a turn: each turn is an object "
                                   "with 'role' and 'content' (or ShareGPT 'from' and 'value')")
    role = m.get("role", m.get("from"))
    if role is None:
        raise BadRow("missing_field", f"{label} has no 'role' (or 'from'): say who speaks in each turn")
    if not isinstance(role, str) or role.lower() not in ROLES:
        raise BadRow("unknown_role", f"{label} has role {role!r}: known roles are system, user (human) and "
                                     "assistant (gpt, chatgpt, bing, bard, model); rename it or drop the turn")
    return {"role": ROLES[role.lower()], "content": _text(m.get("content", m.get("value")), f"{label}.content")}


def _messages(value, field: str) -> list[dict]:
    if value is None:
        raise BadRow("missing_field", f"field '{field}' is missing (or null): add it, or drop the row")
    if not isinstance(value, list):
        raise BadRow("wrong_type", f"field '{field}' is a {type(value).__name__}, expected a list of turns")
    if not value:
        raise BadRow("empty_field", f"field '{field}' is an empty list: add the turns, or drop the row")
    return [_message(m, f"{field}[{i}]") for i, m in enumerate(value)]


def _check_chat(msgs: list[dict], labels: list[str]) -> None:
    """Raise BadRow unless the chat reads [system] user assistant user ... assistant."""
    expected = "user"
    for i, (m, label) in enumerate(zip(msgs, labels)):
        if m["role"] == "system":
            if i == 0:
                continue
            raise BadRow("alternation", f"{label} is a system turn after the first turn: a system message may "
                                        "only come first; move it there or merge it into a user turn")
        if m["role"] != expected:
            raise BadRow("alternation", f"{label} is a {m['role']} turn where a {expected} turn should be: "
                                        "turns must alternate user/assistant; merge the two turns or drop one")
        expected = "assistant" if expected == "user" else "user"
    if msgs[-1]["role"] != "assistant":
        raise BadRow("not_ending_with_assistant", f"{labels[-1]} is a {msgs[-1]['role']} turn and the last one: "
                                                  "a training chat must end with an assistant answer; "
                                                  "add the answer or drop the trailing turn")


def _chat(value, field: str) -> list[dict]:
    msgs = _messages(value, field)
    _check_chat(msgs, [f"{field}[{i}]" for i in range(len(msgs))])
    return msgs


def _alpaca(row: dict) -> list[dict]:
    user = _text(row.get("instruction"), "instruction")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise BadRow("wrong_type", f"field 'input' is a {type(extra).__name__}, expected a string (or leave it out)")
    if extra and extra.strip():
        user = f"{user}\n\n{extra}"  # the Alpaca convention: context after a blank line
    system = row.get("system")
    head = [{"role": "system", "content": _text(system, "system")}] if system else []
    return head + [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row.get("output"), "output")}]


def _sharegpt(row: dict) -> list[dict]:
    msgs = _messages(row.get("conversations"), "conversations")
    labels = [f"conversations[{i}]" for i in range(len(msgs))]
    system = row.get("system")  # some ShareGPT exports keep the system prompt beside the turns
    if system and msgs[0]["role"] != "system":
        msgs, labels = [{"role": "system", "content": _text(system, "system")}] + msgs, ["system"] + labels
    _check_chat(msgs, labels)
    return msgs


def _side(value, field: str, role: str) -> list[dict]:
    """A prompt or an answer: a plain string becomes one `role` turn, a list is taken as turns."""
    if isinstance(value, list):
        return _messages(value, field)
    return [{"role": role, "content": _text(value, field)}]


def _prompt_completion(row: dict) -> dict:
    prompt = _side(row.get("prompt"), "prompt", "user")
    completion = _side(row.get("completion"), "completion", "assistant")
    _check_chat(prompt + completion, _labels("prompt", prompt) + _labels("completion", completion))
    return {"prompt": prompt, "completion": completion}


def _preference(row: dict) -> dict:
    prompt = _side(row.get("prompt"), "prompt", "user")
    out = {"prompt": prompt}
    for field in ("chosen", "rejected"):
        answer = _side(row.get(field), field, "assistant")
        if len(answer) > len(prompt) and answer[:len(prompt)] == prompt:
            answer = answer[len(prompt):]  # UltraFeedback style: chosen repeats the prompt turns; keep the answer
        _check_chat(prompt + answer, _labels("prompt", prompt) + _labels(field, answer))
        out[field] = answer
    if _as_seen(out["chosen"]) == _as_seen(out["rejected"]):
        ask, answer = _short(prompt[-1]["content"]), _short(out["chosen"][-1]["content"])
        raise BadRow("identical_pair", f"chosen and rejected are identical (prompt {ask!r}, both answer {answer!r}): "
                                       "the pair carries no preference signal; make 'rejected' a worse answer, "
                                       "or drop the row")
    return out


def _as_seen(answer: list[dict]) -> list[tuple[str, str]]:
    # the answer as the model is trained on it: converted turns, surrounding whitespace ignored (chat
    # templates such as Llama 3's trim it), so "Blue." and [{"role": "assistant", "content": "Blue. "}] match
    return [(m["role"], m["content"].strip()) for m in answer]


def _short(text: str, n: int = 40) -> str:
    text = " ".join(text.split())  # one line, for a reason printed in a report
    return text if len(text) <= n else text[:n - 3] + "..."


def _labels(field: str, msgs: list) -> list[str]:
    return [f"{field}[{i}]" for i in range(len(msgs))]


def _check_decodable(value, label: str) -> None:
    # U+FFFD marks bytes that did not decode; lone surrogates come from broken escapes. Both poison training text.
    if isinstance(value, str):
        bad = next((c for c in value if c == "\ufffd" or "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            raise BadRow("undecodable", f"field '{label}' contains U+{ord(bad):04X}, text that did not decode as UTF-8: "
                                        "re-export the file as UTF-8 or fix that text")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_decodable(v, f"{label}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_decodable(v, f"{label}.{k}")
