"""Reward functions for reinforcement learning on the course tasks, with TRL's reward signature.

A reward function scores sampled answers: `fn(completions, answer, **kwargs) -> list[float]`, one number
per completion (None: "does not apply", which TRL skips). `completions` are strings, or for chat prompts
one-message lists `[{"role": "assistant", "content": ...}]`; `answer` is the dataset column of the same
name (the reference answer, one per completion); TRL also passes `prompts`, `completion_ids` and more in
**kwargs. GRPOTrainer sums the functions' rewards per completion and logs each as rewards/<name>/mean.
Shipped (REWARDS): exact_date (1 when the answer is exactly the reference), date_shape (1 for any real
YYYY-MM-DD date: easy to game, see notebook 09), date_fields (partial credit, 1/3 per right field).
`checked(fn)` wraps any function so a crash or a wrong-length result stops training with a message
naming the function and the completion that broke it. Leaves out: reward models (neural scorers).
"""

from __future__ import annotations

import datetime
import functools
import re

from ftlab.tasks import normalize

ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")  # year, month, day


class RewardError(RuntimeError):
    """A reward function raised or returned the wrong thing; the message names it and the completion."""


def text(completion) -> str:
    """The answer's text: a string as is, or the content of a chat completion's messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def is_date(value: str) -> bool:
    """`value` is a real calendar date written YYYY-MM-DD ("2021-02-30" is not)."""
    if not ISO_DATE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def exact_date(completions, answer, **kwargs) -> list[float]:
    """1.0 when the answer is exactly the reference (after tasks.normalize: the evaluation's exact match)."""
    return [float(normalize(text(c)) == normalize(ref)) for c, ref in zip(completions, answer)]


def date_shape(completions, **kwargs) -> list[float]:
    """1.0 for an answer that is a valid YYYY-MM-DD date and nothing else, whatever the date.

    Needs no reference, so any date earns full marks: a model can learn to answer one fixed date.
    """
    return [float(is_date(normalize(text(c)))) for c in completions]


def date_fields(completions, answer, **kwargs) -> list[float]:
    """Partial credit: 1/3 for each of year, month and day right in the first YYYY-MM-DD in the answer.

    Earns something when the answer is chatty ("The date is 2021-03-03.") or has one field wrong, so a
    group of sampled answers differs in reward more often than with exact_date alone (GRPO's signal).
    """
    scores = []
    for c, ref in zip(completions, answer):
        found, want = ISO_DATE.search(text(c)), ISO_DATE.fullmatch(normalize(ref))
        if want is None:
            raise ValueError(f"reference answer {ref!r} is not YYYY-MM-DD: date_fields scores dates only")
        scores.append(sum(a == b for a, b in zip(found.groups(), want.groups())) / 3 if found else 0.0)
    return scores


REWARDS = {f.__name__: f for f in (exact_date, date_shape, date_fields)}  # the names a config can use


def checked(fn):
    """`fn` wrapped: a RewardError naming the function and the completion when it raises or returns a
    wrong-length or non-numeric list. Keeps fn's __name__ (TRL logs rewards/<name>/mean)."""
    name = getattr(fn, "__name__", type(fn).__name__)

    @functools.wraps(fn)
    def wrapper(prompts=None, completions=(), **kwargs):
        try:
            scores = fn(prompts=prompts, completions=completions, **kwargs)
        except Exception as err:  # any failure: find the completion that causes it
            raise RewardError(f"reward function {name} raised {type(err).__name__}: {err} "
                              f"{_culprit(fn, prompts, completions, kwargs)}") from err
        scores = list(scores) if scores is not None else None
        if scores is None or len(scores) != len(completions):
            got = "None" if scores is None else f"{len(scores)} scores"
            raise RewardError(f"reward function {name} returned {got} for {len(completions)} completions. "
                              f"Fix: return a list with one float per completion (None where it does not apply).")
        for s, c in zip(scores, completions):
            if s is not None and not isinstance(s, (int, float)):
                raise RewardError(f"reward function {name} returned {s!r} ({type(s).__name__}) for completion "
                                  f"{text(c)!r}. Fix: return floats (or None where it does not apply).")
        return scores

    return wrapper


def _culprit(fn, prompts, completions, kwargs) -> str:
    """'on completion ...': the first completion that makes fn raise when scored alone."""
    for i, c in enumerate(completions):
        one = {k: v[i:i + 1] if isinstance(v, list) and len(v) == len(completions) else v
               for k, v in kwargs.items()}
        try:
            fn(prompts=prompts[i:i + 1] if prompts else prompts, completions=[c], **one)
        except Exception:  # noqa: BLE001 - any failure marks the culprit
            extra = {k: v[0] for k, v in one.items() if isinstance(v, list) and v and k != "completion_ids"}
            return f"on completion {text(c)!r} (with {extra})" if extra else f"on completion {text(c)!r}"
    return "on the batch as a whole (each completion alone scored fine)"


def reward_functions(items) -> list:
    """Callables for TRL from names in REWARDS and/or your own functions, each wrapped by `checked`."""
    out = []
    for item in items:
        if isinstance(item, str):
            if item not in REWARDS:
                raise ValueError(f"no reward function {item!r}: the shipped ones are {', '.join(REWARDS)}. "
                                 "Fix: use one of those names, or pass your own function: "
                                 "train(cfg, reward_funcs=[my_reward]).")
            item = REWARDS[item]
        if not callable(item):
            raise TypeError(f"reward function {item!r} is not callable. Fix: pass a function "
                            "fn(completions, **kwargs) -> list[float], or a name from ftlab.rewards.REWARDS.")
        out.append(checked(item))
    return out


def reward_name(fn) -> str:
    """The name TRL logs a reward function under (rewards/<name>/mean)."""
    return getattr(fn, "__name__", type(fn).__name__)


def mean_rewards(reward_funcs, answers: list[str], references: list[str]) -> dict[str, list[float]]:
    """{name: per-answer scores} of generated string answers against their references (the run report)."""
    return {reward_name(fn): [float("nan") if s is None else float(s)
                       for s in checked(fn)(prompts=None, completions=list(answers), answer=list(references))]
            for fn in reward_funcs}


__all__ = ["REWARDS", "RewardError", "checked", "date_fields", "date_shape", "exact_date", "is_date",
           "mean_rewards", "reward_functions", "reward_name", "text"]
