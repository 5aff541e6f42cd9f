"""Evaluate fine-tuned models: held-out loss, task metrics side by side, contamination, benchmarks.

`eval_loss` computes loss and perplexity on the assistant tokens of chat rows with memory bounded by one
batch (the full-vocabulary logits only ever exist for `chunk_size` positions at a time).
`evaluate` generates greedy answers with several models (or adapters of one PeftModel) and returns two
pandas tables: metrics per model, and each prompt with every model's answer. `contamination` finds
evaluation rows that share word n-grams with the training rows. `benchmark` runs lm-evaluation-harness
tasks (optional extra, `pip install lm-eval`) on the model object in memory; data/lm_eval/ holds local
task YAMLs. `combination_table` compares two single-task adapters with their combination.
Leaves out: LLM-as-judge, sampled (non-greedy) metrics, distributed evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ftlab.data import convert
from ftlab.formats import conversations
from ftlab.generate import generate_batch
from ftlab.lossmask import loss_mask
from ftlab.merge import answering_as, combine_adapters, delete_adapter, load_adapters
from ftlab.models import load_model
from ftlab.rewards import mean_rewards
from ftlab.tasks import DATA_DIR, contains, exact_match, prompts_and_references

LM_EVAL_DIR = DATA_DIR / "lm_eval"  # local lm-evaluation-harness task YAMLs (shipped)
LM_EVAL_MISSING = ("lm-evaluation-harness is not installed: pip install 'lm-eval>=0.4.9' "
                   "(optional: the rest of ftlab.evaluation works without it)")


# --- loss and perplexity -----------------------------------------------------------------------------

# Config fields of models that transform logits after lm_head, which eval_loss would skip.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logits_scaling", "logit_scale")


def _batch(rows, tokenizer, max_length: int):
    """(input_ids, attention_mask, loss_mask), each (batch, longest) and right-padded: the training loss mask."""
    views = [loss_mask(row, tokenizer, max_length=max_length) for row in rows]
    width = max(len(v.input_ids) for v in views)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([v.input_ids + [pad] * (width - len(v.input_ids)) for v in views])
    attn = torch.tensor([[1] * len(v.input_ids) + [0] * (width - len(v.input_ids)) for v in views])
    mask = torch.tensor([v.mask + [0] * (width - len(v.mask)) for v in views])
    return ids, attn, mask


def _decoder_and_head(model, caller: str):
    """(decoder, lm_head) of `model` (a PeftModel's LoRA-injected LM), for scoring only the positions that carry
    loss; a ValueError naming the fix where lm_head's output is not the model's logits."""
    if getattr(model, "active_peft_config", None) is not None and model.active_peft_config.is_prompt_learning:
        raise ValueError(f"{caller} runs the base decoder, which never sees the virtual tokens of prefix/prompt "
                         "tuning. Fix: use the trainer's eval loss (trainer.evaluate()) for those methods")
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> its LoRA-injected LM
    if any(getattr(lm.config, k, None) for k in _LOGIT_TRANSFORMS):
        raise ValueError(f"{type(lm).__name__} transforms its logits after lm_head, which {caller} does not "
                         "apply; compute the loss with model(..., labels=...) instead")
    return lm.get_decoder(), lm.get_output_embeddings()


def _answer_token_logprobs(decoder, head, ids, attn, mask, chunk_size: int):
    """(log-probabilities, row of each) of the tokens that carry loss in one right-padded batch.

    Only the hidden states of the positions that predict an assistant token go through lm_head, `chunk_size`
    at a time: the vocabulary-wide logits of the prompt and padding positions are never computed.
    """
    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state  # (batch, length, d_model)
    keep = mask[:, 1:].bool()  # position t predicts token t+1: keep those whose next token carries loss
    states, targets = hidden[:, :-1][keep], ids[:, 1:][keep]  # (n, d_model), (n,)
    logp = [-F.cross_entropy(head(states[j:j + chunk_size]).float(), targets[j:j + chunk_size], reduction="none")
            for j in range(0, len(targets), chunk_size)]  # each (<= chunk_size,): the only vocab-wide tensors
    return (torch.cat(logp) if logp else states.new_zeros(0)), keep.nonzero()[:, 0]


@torch.inference_mode()
def eval_loss(model, tokenizer, rows, batch_size: int = 8, max_length: int = 512, chunk_size: int = 256) -> dict:
    """Mean loss on the assistant tokens of `rows` (chat rows), perplexity = exp(loss), and the token count.

    Runs the decoder on one batch at a time, keeps the hidden states of the positions that predict an
    assistant token, and sends them through lm_head `chunk_size` at a time: peak memory is one batch of
    hidden states plus chunk_size x vocab fp32 logits, whatever the number of rows.
    """
    decoder, head = _decoder_and_head(model, "eval_loss")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        ids, attn, mask = (t.to(device) for t in _batch(rows[i:i + batch_size], tokenizer, max_length))
        logp, _ = _answer_token_logprobs(decoder, head, ids, attn, mask, chunk_size)
        total -= logp.sum().item()
        count += len(logp)
    if count == 0:
        raise ValueError("no assistant tokens to score: the rows need an assistant answer within max_length")
    return {"loss": total / count, "perplexity": math.exp(total / count), "tokens": count}


@torch.inference_mode()
def answer_logprobs(model, tokenizer, chats, batch_size: int = 8, max_length: int = 512,
                    chunk_size: int = 256) -> list[float]:
    """Summed log-probability of each chat's assistant tokens (the training loss mask) given the rest:
    the quantity DPO, ORPO and KTO compare between a chosen and a rejected answer. Like eval_loss, only the
    answer positions go through lm_head."""
    decoder, head = _decoder_and_head(model, "answer_logprobs")
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(chats), batch_size):
        ids, attn, mask = (t.to(device) for t in _batch(chats[i:i + batch_size], tokenizer, max_length))
        logp, row = _answer_token_logprobs(decoder, head, ids, attn, mask, chunk_size)
        out += torch.zeros(len(ids), dtype=logp.dtype, device=device).index_add_(0, row, logp).tolist()
    return out


def preference_accuracy(model, tokenizer, pairs, batch_size: int = 8, max_length: int = 512) -> dict:
    """How often `model` gives the chosen answer of each prompt/chosen/rejected pair a higher summed
    log-probability than the rejected one: the preference methods' shared yardstick, with no reference
    model (unlike DPO's rewards/accuracies). Returns accuracy, mean margin (nats) and the margins."""
    for i, p in enumerate(pairs):
        if not {"prompt", "chosen", "rejected"} <= set(p):
            raise ValueError(f"pair {i} has {sorted(p)}, not prompt/chosen/rejected. Fix: pass preference rows")
        if not all(isinstance(p[k], list) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"pair {i} holds text, not messages: the chat template decides what is scored. "
                             "Fix: read the file with ftlab.data.read_rows, or write prompt/chosen/rejected as "
                             "lists of {role, content} messages")
    chosen = answer_logprobs(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size, max_length)
    rejected = answer_logprobs(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size, max_length)
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"accuracy": sum(m > 0 for m in margins) / len(margins), "mean_margin": sum(margins) / len(margins),
            "n": len(margins), "margins": margins}


# --- task metrics on generated answers ---------------------------------------------------------------

def valid_json(prediction: str, reference: str | None = None) -> bool:
    """The answer parses as JSON (after stripping whitespace and one ``` or ```json fence)."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", prediction.strip())
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


METRICS = {"exact_match": exact_match, "contains": contains, "valid_json": valid_json}


def _contenders(models, tokenizer, adapters) -> dict:
    """{name: (model, tokenizer, adapter)}; adapter None: the model as given, False: all adapters off."""
    if isinstance(models, dict):
        return {name: (m, tok, None) for name, (m, tok) in models.items()}
    if tokenizer is None:
        raise ValueError("evaluate(peft_model, rows) needs tokenizer=: the one the model was loaded with")
    return {"base": (models, tokenizer, False)} | {a: (models, tokenizer, a) for a in adapters or models.peft_config}


def evaluate(models, rows, *, tokenizer=None, adapters=None, metrics=("exact_match", "contains"),
             scorers: dict | None = None, loss: bool = False, max_new_tokens: int = 32,
             batch_size: int = 16) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics table, answers table) for several models on the same chat rows, greedy answers.

    models: {name: (model, tokenizer)}, or a PeftModel: then its base (adapters disabled) and each of
        `adapters` (default: all loaded), with `tokenizer`.
    metrics: names from METRICS; scorers: more {name: fn(prediction, reference) -> float}.
    loss: also eval_loss and perplexity per model (one more forward pass per row).
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}: choose from {sorted(METRICS)} or pass scorers=")
    score = {m: METRICS[m] for m in metrics} | dict(scorers or {})
    prompts, refs = prompts_and_references(rows)
    answers = pd.DataFrame({"prompt": [p[-1]["content"] for p in prompts], "reference": refs})
    active = None if isinstance(models, dict) else models.active_adapter
    table = {}
    for name, (model, tok, adapter) in _contenders(models, tokenizer, adapters).items():
        with answering_as(model, adapter):
            answers[name] = generate_batch(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            table[name] = {m: sum(float(fn(a, r)) for a, r in zip(answers[name], refs)) / len(refs)
                           for m, fn in score.items()}
            if loss:
                table[name] |= eval_loss(model, tok, rows)
    if active is not None:
        models.set_adapter(active)  # leave the PeftModel as it came
    metrics_table = pd.DataFrame.from_dict(table, orient="index")
    metrics_table.index.name, metrics_table["n"] = "model", len(rows)
    return metrics_table, answers


# --- contamination -----------------------------------------------------------------------------------

def _text(row) -> str:
    if isinstance(row, str):
        return row
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    return json.dumps(row, ensure_ascii=False)


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())  # case and punctuation ignored, as in most decontamination
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def contamination(train_rows, eval_rows, n: int = 8, *, text=None, max_train_share: float | None = 0.05
                  ) -> pd.DataFrame:
    """Evaluation rows sharing word n-grams with the training rows: index, overlap ratio, shared n-grams, text.

    overlap_ratio: shared n-grams / the eval row's n-grams. text: row -> the string to compare (default:
    all message contents). On templated data (the same instruction around a short input, as in data/dates)
    the template's n-grams overlap everywhere: pass a `text` that picks the part that varies.
    max_train_share: n-grams in more than this share of training rows (and more than one) are boilerplate
    and ignored; None keeps them.
    """
    text = text or _text
    seen = Counter(g for row in train_rows for g in _ngrams(text(row), n))  # n-gram -> training rows holding it
    limit = max(1, max_train_share * len(train_rows)) if max_train_share is not None else math.inf
    found = []
    for i, row in enumerate(eval_rows):
        grams = _ngrams(text(row), n)
        shared = sorted(" ".join(g) for g in grams if 0 < seen[g] <= limit)
        if shared:
            found.append({"eval_index": i, "overlap_ratio": len(shared) / len(grams), "shared_ngrams": shared,
                          "text": text(row)})
    columns = ["eval_index", "overlap_ratio", "shared_ngrams", "text"]
    return pd.DataFrame(found, columns=columns).sort_values("overlap_ratio", ascending=False, ignore_index=True)


# --- lm-evaluation-harness ---------------------------------------------------------------------------

def lm_eval_tasks(names=None, folder=LM_EVAL_DIR) -> list[dict]:
    """Task configs from the YAMLs in `folder`, with relative data_files made absolute (from the YAML's folder)."""
    import yaml

    configs = [yaml.safe_load(p.read_text()) for p in sorted(Path(folder).glob("*.yaml"))]
    for cfg in configs:
        files = cfg.get("dataset_kwargs", {}).get("data_files", {})
        for split, path in files.items():
            files[split] = str((Path(folder) / path).resolve()) if not Path(path).is_absolute() else path
    known = {c["task"]: c for c in configs}
    missing = set(names or []) - set(known)
    if missing:
        raise ValueError(f"no local lm-eval task {sorted(missing)} in {folder}: there are {sorted(known)}")
    return [known[n] for n in names] if names else configs


def benchmark(model, tokenizer, tasks=None, *, limit: int | None = None, batch_size: int = 8,
              apply_chat_template: bool = True) -> pd.DataFrame:
    """Run lm-evaluation-harness on the model object in memory: local task names (data/lm_eval) or dict configs.

    limit: first N documents per task (quick looks; the figure is noisier). Returns one row per metric.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise ImportError(LM_EVAL_MISSING) from err
    names = [t for t in tasks or [] if isinstance(t, str)]
    configs = [t for t in tasks or [] if not isinstance(t, str)]
    if names or not tasks:
        configs = lm_eval_tasks(names or None) + configs
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    out = lm_eval.simple_evaluate(model=lm, tasks=configs, limit=limit, apply_chat_template=apply_chat_template,
                                  log_samples=False, bootstrap_iters=0)
    rows = [{"task": task, "metric": key.split(",")[0], "filter": key.partition(",")[2], "value": value}
            for task, res in out["results"].items() for key, value in res.items()
            if "," in key and "_stderr" not in key]  # "acc,none": metric,filter
    return pd.DataFrame(rows)


# --- the `ftlab eval` command ------------------------------------------------------------------------

def run_eval_cli(model: str, adapter: str | None, data: str, *, load_in_4bit: bool = False,
                 limit: int | None = None, max_new_tokens: int = 32, loss: bool = True, show: int = 5) -> str:
    """Text for `ftlab eval`: metrics of the base model (and the adapter, side by side) on a data file."""
    rows = [r for r in convert(data).rows if "messages" in r][:limit]
    if not rows:
        raise ValueError(f"{data} has no chat rows to evaluate: it needs messages ending with the answer")
    base, tok = load_model(model, load_in_4bit=load_in_4bit, verbose=False)
    models = load_adapters(base, {"tuned": adapter}) if adapter else {"base": (base, tok)}
    table, answers = evaluate(models, rows, tokenizer=tok, loss=loss, max_new_tokens=max_new_tokens)
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        return (f"{len(rows)} rows from {data}\n\n{table.to_string(float_format='{:.4g}'.format)}\n\n"
                f"first {min(show, len(answers))} answers:\n{answers.head(show).to_string()}")


# --- adapters trained on two tasks, and their combination --------------------------------------------

def combination_table(model, tokenizer, adapters, tasks: dict, *, weights=None, combination_type: str = "cat",
                      density: float | None = None, name: str = "combined", max_new_tokens: int = 16,
                      singles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Exact match of the base, each single-task adapter and their combination on every task (rows x tasks).

    adapters: {name: run_dir} to load into `model` (a base model, wrapped in place in a PeftModel), or the
    names of adapters `model` already holds. weights: one per adapter (default 1.0 each: 'cat' then adds
    the full updates of both). A combination `name` made earlier is replaced. singles: an earlier table of
    the same adapters and tasks; its base and single-adapter rows are reused (they do not depend on the
    weights), so only the combination is scored again (the combination panel's sliders).
    """
    if isinstance(adapters, dict):
        model = load_adapters(model, adapters)
    names = list(adapters)
    if name in model.peft_config:
        model.set_adapter(names[0])  # PEFT deletes an inactive adapter cleanly
        delete_adapter(model, name)
    combine_adapters(model, names, weights or [1.0] * len(names), name=name, combination_type=combination_type,
                     density=density)
    columns = {}
    for task, rows in tasks.items():
        if singles is None:
            table, _ = evaluate(model, rows, tokenizer=tokenizer, adapters=[*names, name],
                                metrics=("exact_match",), max_new_tokens=max_new_tokens)
            columns[task] = table["exact_match"]
        else:
            table, _ = evaluate({name: (model, tokenizer)}, rows, metrics=("exact_match",),
                                max_new_tokens=max_new_tokens)
            columns[task] = pd.concat([singles[task].drop(name), table["exact_match"]])
    return pd.DataFrame(columns)


# --- the end of a training run: base vs tuned on the test rows ---------------------------------------

N_SAMPLES = 5  # test generations shown side by side in the report


def test_rows(path, limit: int | None = None) -> list[dict]:
    """A test file's rows as {"messages": [...]} chats (any format ftlab.data reads), the first `limit`."""
    rows = [{"messages": conversations(r)[0]} for r in convert(path).rows]
    return rows[:limit] if limit else rows


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z=1.96) of a proportion: sensible at 0/n and n/n, unlike mean +- 2 SE."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))


def mean_interval(values, z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): the normal-approximation 95% interval of a mean (NaN values left out)."""
    values = [v for v in values if not math.isnan(v)]
    mean = sum(values) / max(len(values), 1)
    if len(values) < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, mean - z * sd / math.sqrt(len(values)), mean + z * sd / math.sqrt(len(values))


def reward_table(reward_funcs, answers: pd.DataFrame, who=("base", "tuned")) -> list[dict]:
    """Mean reward (95% interval) of each model's greedy answers per reward function, and their sum."""
    rows = []
    for name in who:
        scores = mean_rewards(reward_funcs, list(answers[name]), list(answers["reference"]))
        total = [sum(col) for col in zip(*scores.values())]  # what GRPO maximises: the sum per answer
        for fn, values in {**scores, "sum": total}.items():
            mean, low, high = mean_interval(values)
            rows.append({"model": name, "reward": fn, "mean": mean, "low": low, "high": high, "n": len(values)})
    return rows


@torch.inference_mode()
def text_loss(model, tokenizer, texts: list[str], max_length: int = 512) -> dict:
    """Mean loss on every token of raw `texts` (each + end-of-text, cut into max_length windows),
    perplexity = exp(loss), and the token count: what continued pretraining lowers."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        for start in range(0, len(ids) - 1, max_length):
            window = torch.tensor([ids[start:start + max_length]], device=device)  # (1, <= max_length)
            if window.shape[1] < 2:
                continue
            logits = model(input_ids=window).logits[0, :-1].float()  # (length - 1, vocab)
            total += F.cross_entropy(logits, window[0, 1:], reduction="sum").item()
            count += window.shape[1] - 1
    if count == 0:
        raise ValueError("no text to score: every text is shorter than two tokens")
    return {"loss": total / count, "perplexity": math.exp(total / count), "tokens": count}


def evaluate_text_run(cfg, model, tokenizer) -> dict:
    """task=cpt's evaluation on cfg.test_file (raw text): perplexity of the base (adapter off) and the tuned model."""
    texts = [r["text"] for r in convert(cfg.test_file).rows][: cfg.test_limit or None]
    model.eval()
    if hasattr(model, "disable_adapter"):  # a PEFT model is its own base, adapter off
        with answering_as(model, False):
            base = text_loss(model, tokenizer, texts, cfg.max_length)
    else:  # full fine-tuning changed the weights: the base is loaded again
        base_model, _ = load_model(cfg.model, backend="transformers", verbose=False)
        base = text_loss(base_model.eval(), tokenizer, texts, cfg.max_length)
    tuned = text_loss(model, tokenizer, texts, cfg.max_length)
    return {"base_perplexity": base["perplexity"], "tuned_perplexity": tuned["perplexity"],
            "n_test": len(texts), "n_test_tokens": tuned["tokens"], "test_split": Path(cfg.test_file).name}


def evaluate_run(cfg, model, tokenizer, reward_funcs=()) -> dict:
    """The run report's evaluation on cfg.test_file: base vs tuned side by side (evaluate), greedy.

    Exact match and contains on the generated answers; loss and perplexity on the reference answers
    (not for prefix/prompt tuning, whose virtual tokens eval_loss cannot see); a few generations; and the
    lm-evaluation-harness tasks in cfg.benchmark_tasks when lm-eval is installed; with reward_funcs (GRPO)
    the mean reward of the same greedy answers (reward_table); with cfg.unseen_test_file, exact match base vs
    tuned on it too, under "unseen". A PEFT model serves as its own base (adapter off); full fine-tuning
    changed the weights, so the base is loaded again (transformers backend: the comparison must not depend
    on how training ran).
    """
    model.eval()  # Trainer leaves dropout on
    loss = cfg.method not in ("prefix", "prompt")
    base_model = None
    if not hasattr(model, "disable_adapter"):
        base_model, _ = load_model(cfg.model, backend="transformers", verbose=False)
    rows = test_rows(cfg.test_file, cfg.test_limit)
    table, answers = _base_vs_tuned(model, tokenizer, base_model, rows, loss)
    out = {"base_exact_match": float(table.loc["base", "exact_match"]),
           "tuned_exact_match": float(table.loc["tuned", "exact_match"]), "n_test": len(rows),
           "test_split": Path(cfg.test_file).name,
           "eval_table": table, "samples": answers.head(N_SAMPLES).to_dict("records")}
    if reward_funcs:
        out["reward_table"] = reward_table(reward_funcs, answers)
        sums = {r["model"]: r["mean"] for r in out["reward_table"] if r["reward"] == "sum"}
        out["base_mean_reward"], out["tuned_mean_reward"] = sums["base"], sums["tuned"]
    if cfg.unseen_test_file:
        unseen_rows = test_rows(cfg.unseen_test_file, cfg.test_limit)
        unseen, unseen_answers = _base_vs_tuned(model, tokenizer, base_model, unseen_rows, loss=False)
        out["unseen"] = {"base_exact_match": float(unseen.loc["base", "exact_match"]),
                         "tuned_exact_match": float(unseen.loc["tuned", "exact_match"]), "n_test": len(unseen_rows),
                         "test_split": Path(cfg.unseen_test_file).name,
                         "samples": unseen_answers.head(N_SAMPLES).to_dict("records")}
    if cfg.benchmark_tasks:
        out["benchmark_table"] = _benchmark_base_and_tuned(cfg, model, tokenizer, base_model)
    return out


def _base_vs_tuned(model, tokenizer, base_model, rows, loss: bool):
    """(table, answers) of evaluate() for the base and the tuned model on rows; base_model None: the PeftModel
    with its adapter off."""
    if base_model is None:
        name = model.active_adapter
        # batches of 8: generating 16 at a time through a PeftModel on a bf16 base peaked 430 MB higher
        table, answers = evaluate(model, rows, tokenizer=tokenizer, adapters=[name], loss=loss,
                                  max_new_tokens=16, batch_size=8)
        return table.rename(index={name: "tuned"}), answers.rename(columns={name: "tuned"})
    return evaluate({"base": (base_model.eval(), tokenizer), "tuned": (model, tokenizer)}, rows,
                    loss=loss, max_new_tokens=16, batch_size=8)


def _benchmark_base_and_tuned(cfg, model, tokenizer, base_model):
    """lm-evaluation-harness on cfg.benchmark_tasks, base and tuned in one table; None (said) without lm-eval."""
    if importlib.util.find_spec("lm_eval") is None:
        print(f"ftlab: benchmark_tasks skipped: {LM_EVAL_MISSING}")
        return None
    if base_model is None:
        with model.disable_adapter():
            base = benchmark(model, tokenizer, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    else:
        base = benchmark(base_model, tokenizer, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    tuned = benchmark(model, tokenizer, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    return base.rename(columns={"value": "base"}).assign(tuned=tuned["value"].to_numpy())
