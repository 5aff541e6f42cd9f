"""Evaluation on the real SmolLM2-135M: chunked loss, side-by-side answers, contamination, lm-eval, two tasks."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from ftlab import generate_batch, load_model
from ftlab.data import read_rows
from ftlab.evaluation import (
    LM_EVAL_DIR,
    _batch,
    answer_logprobs,
    benchmark,
    contamination,
    eval_loss,
    evaluate,
    preference_accuracy,
    run_eval_cli,
    valid_json,
)
from ftlab.tasks import DATA_DIR, contains, exact_match, load_split, prompts_and_references


@pytest.fixture(scope="module")
def fresh_model():
    """Our own copy: PeftModel wrapping changes a model in place, so the shared fixture stays untouched."""
    return load_model(verbose=False)


def test_eval_loss_equals_the_models_own_loss(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows = load_split("dates", "validation")[:6]
    ours = eval_loss(model, tok, rows, batch_size=4, chunk_size=7)  # chunks that cut through rows
    ids, attn, mask = _batch(rows, tok, 512)  # on the CPU: moved to the model's device for the forward
    with torch.inference_mode():
        labels = ids.masked_fill(mask == 0, -100)
        theirs = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                       labels=labels.to(model.device)).loss.item()
    assert ours["tokens"] == int(mask[:, 1:].sum()) == 66  # 6 ISO dates of ~10 tokens + <|im_end|> each
    assert ours["loss"] == pytest.approx(theirs, abs=1e-5)  # measured 0.62897 both
    assert ours["perplexity"] == pytest.approx(2.71828 ** ours["loss"], rel=1e-4)


@pytest.mark.parametrize("which", ["evaluate_run", "evaluate_text_run"])
def test_full_finetuning_reloads_its_base_through_transformers(tmp_path, monkeypatch, which):
    """After full fine-tuning the base is loaded again to compare with: through transformers, never Unsloth
    (the comparison must not depend on how the training ran, nor on whether backend=auto picks Unsloth)."""
    from types import SimpleNamespace

    import ftlab.evaluation

    asked = {}

    class Loaded(Exception):
        pass

    def load_model(name, **kwargs):
        asked.update(kwargs, name=name)
        raise Loaded

    monkeypatch.setattr(ftlab.evaluation, "load_model", load_model)
    texts = tmp_path / "test.jsonl"
    texts.write_text(json.dumps({"text": "The quick brown fox jumps over the lazy dog."}) + "\n")
    cfg = SimpleNamespace(model="some/base", method="full", test_file=str(texts), test_limit=None,
                          max_length=64)
    tuned = torch.nn.Linear(2, 2)  # a plain model (no disable_adapter): what full fine-tuning leaves
    with pytest.raises(Loaded):
        getattr(ftlab.evaluation, which)(cfg, tuned, None)
    assert asked["name"] == "some/base" and asked.get("backend") == "transformers", asked


MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time, psutil, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from ftlab import load_model
    from ftlab.evaluation import eval_loss
    from ftlab.tasks import load_split
    torch.set_num_threads(1)
    n, which = int(sys.argv[1]), sys.argv[2]
    model, tok = load_model(verbose=False)
    if which == "tiny":  # SmolLM2's vocabulary and tokenizer, 2 small layers: the same logits, 100x less compute
        model = LlamaForCausalLM(LlamaConfig(vocab_size=model.config.vocab_size, hidden_size=64,
                                             intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=4, tie_word_embeddings=True)).eval()
    rows = (load_split("dates", "train")[:8] * (n // 8 + 1))[:n]  # the same batches repeated: only n differs
    proc, peak, done = psutil.Process(), [0], []
    def sample():  # RSS every 2 ms: torch allocations are invisible to tracemalloc
        while not done:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)
    eval_loss(model, tok, rows[:8])  # warm-up: first-call allocations are not about dataset size
    before = proc.memory_info().rss
    thread = threading.Thread(target=sample); thread.start()
    result = eval_loss(model, tok, rows, batch_size=8)
    done.append(1); thread.join()
    print(json.dumps({"rows": n, "tokens": result["tokens"], "growth_mb": round((peak[0] - before) / 2**20, 1),
                      "rss_before_mb": round(before / 2**20)}))
""")


def measure_eval_loss_memory(tmp_path, rows: int, which: str = "tiny") -> dict:
    """Peak RSS growth (MB) while eval_loss runs over `rows` rows, in a fresh process."""
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(rows), which], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scoring_a_prompt_tuned_model_is_refused_with_the_fix():
    """Prompt tuning prepends virtual tokens the decoder-only scoring never sees: refused, not misaligned."""
    from peft import PromptTuningConfig, get_peft_model

    base, tok = load_model(verbose=False)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    chats = [p["prompt"] + p["chosen"] for p in read_rows(DATA_DIR / "dates" / "preference_test.jsonl")[:1]]
    for score in (lambda: answer_logprobs(model, tok, chats), lambda: eval_loss(model, tok, chats)):
        with pytest.raises(ValueError, match="virtual tokens of prefix/prompt tuning.*Fix: use the trainer"):
            score()


@pytest.mark.slow
def test_answer_logprobs_and_preference_accuracy_against_a_hand_computation(model_and_tokenizer):
    model, tok = model_and_tokenizer
    pairs = read_rows(DATA_DIR / "dates" / "preference_test.jsonl")[:5]
    by_hand = []
    for p in pairs[:2]:  # the answer's tokens: after the generation prompt, up to and with <|im_end|>
        prefix = tok.apply_chat_template(p["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
        full = tok.apply_chat_template(p["prompt"] + p["chosen"], tokenize=True, return_dict=True)["input_ids"]
        start, end = len(prefix["input_ids"]), max(i for i, t in enumerate(full) if t == tok.convert_tokens_to_ids("<|im_end|>"))
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([full], device=model.device)).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
        by_hand.append(sum(logp[t - 1, full[t]].item() for t in range(start, end + 1)))
    ours = answer_logprobs(model, tok, [p["prompt"] + p["chosen"] for p in pairs[:2]], batch_size=2)  # padded batch
    assert ours == pytest.approx(by_hand, abs=1e-3)
    assert all(v < 0 for v in ours)
    result = preference_accuracy(model, tok, pairs, batch_size=3)
    swapped = preference_accuracy(model, tok, [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs])
    assert result["n"] == 5 and result["margins"] == pytest.approx([-m for m in swapped["margins"]], abs=1e-3)
    assert result["accuracy"] + swapped["accuracy"] == pytest.approx(1.0)  # no ties in log-probabilities
    assert result["accuracy"] == sum(m > 0 for m in result["margins"]) / 5
    with pytest.raises(ValueError, match="pair 1 has .*'messages'.*not prompt/chosen/rejected"):
        preference_accuracy(model, tok, [pairs[0], {"messages": []}])
    with pytest.raises(ValueError, match="pair 0 holds text, not messages"):
        preference_accuracy(model, tok, [{"prompt": "Q", "chosen": "A", "rejected": "B"}])


def test_eval_loss_memory_stays_flat(tmp_path):
    """10x the rows, the same peak memory. A tiny model with SmolLM2's 49k vocabulary keeps this quick; the
    real model measured the same way (MEMORY_SCRIPT with 'real') is in the merge/eval report."""
    small, large = (measure_eval_loss_memory(tmp_path, n) for n in (100, 1000))
    print("peak RSS growth during eval_loss:", small, large)
    assert large["tokens"] > 9 * small["tokens"]
    # flat: nothing kept per batch. Allocator noise between runs is ~20 MB; keeping each batch's 8 x ~75 x 49152
    # fp32 logits (118 MB) for 1000 rows would add over 10 GB
    assert large["growth_mb"] - small["growth_mb"] < 40
    # one batch's full-vocabulary fp32 logits alone would take 8 rows x ~75 tokens x 49152 x 4 B = 118 MB
    assert large["growth_mb"] < 100


def test_metrics_and_scorers(fresh_model):
    assert valid_json('{"a": 1}') and valid_json('```json\n[1, 2]\n```') and not valid_json("{'a': 1}")
    assert exact_match(" '2021-03-03'. ", "2021-03-03") and contains("It is 2021-03-03.", "2021-03-03")
    model, tok = fresh_model
    rows = load_split("dates", "test")[:3]
    table, answers = evaluate({"base": (model, tok)}, rows, metrics=("exact_match", "contains", "valid_json"),
                              scorers={"short": lambda pred, ref: len(pred) <= 12}, max_new_tokens=16)
    prompts, refs = prompts_and_references(rows)
    expected = generate_batch(model, tok, prompts, max_new_tokens=16)
    assert answers["base"].tolist() == expected
    assert answers["reference"].tolist() == refs
    assert table.loc["base", "short"] == sum(len(a) <= 12 for a in expected) / 3
    assert table.loc["base", "contains"] == sum(contains(a, r) for a, r in zip(expected, refs)) / 3
    assert list(table.columns) == ["exact_match", "contains", "valid_json", "short", "n"]
    with pytest.raises(ValueError, match="unknown metrics \\['bleu'\\]"):
        evaluate({"base": (model, tok)}, rows, metrics=("bleu",))


def _random_adapter(make_adapter, path, seed=0):
    """Random A and B on q_proj and v_proj (scale 1): answers change without training."""
    return str(make_adapter(path, target_modules=["q_proj", "v_proj"], seed=seed))


def test_base_and_adapters_side_by_side(tmp_path, make_adapter):
    from ftlab.merge import load_adapters

    base, tok = load_model(verbose=False)
    rows = load_split("dates", "test")[:3]
    prompts, _ = prompts_and_references(rows)
    plain = generate_batch(base, tok, prompts, max_new_tokens=12)
    model = load_adapters(base, {"a": _random_adapter(make_adapter, tmp_path / "a", 1),
                                 "b": _random_adapter(make_adapter, tmp_path / "b", 2)})
    table, answers = evaluate(model, rows, tokenizer=tok, max_new_tokens=12, loss=True)
    assert list(table.index) == ["base", "a", "b"] and list(answers.columns) == ["prompt", "reference", "base", "a", "b"]
    assert answers["base"].tolist() == plain  # 'base' really is the model with its adapters off
    assert answers["a"].tolist() != plain and answers["a"].tolist() != answers["b"].tolist()
    assert table.loc["a", "loss"] != table.loc["base", "loss"] and table.loc["a", "tokens"] == 33
    assert model.active_adapter == "a"  # left as it came
    html = table._repr_html_()  # what a notebook shows
    assert "<table" in html and "exact_match" in html


def test_run_eval_cli(tmp_path, make_adapter):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in load_split("dates", "test")[:2]))
    adapter = _random_adapter(make_adapter, tmp_path / "ad")
    text = run_eval_cli("HuggingFaceTB/SmolLM2-135M-Instruct", adapter, str(data), max_new_tokens=8)
    assert text.startswith(f"2 rows from {data}")
    header = text.splitlines()[2]
    assert all(k in header for k in ("exact_match", "contains", "loss", "perplexity"))
    assert "\nbase " in text and "\ntuned " in text


def _rows(texts):
    return [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]} for t in texts]


def test_contamination_finds_exactly_the_planted_overlaps():
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]  # random words: no 8-gram repeats by chance
    train = [" ".join(rng.choices(vocab, k=40)) for _ in range(200)]
    evals = [" ".join(rng.choices(vocab, k=40)) for _ in range(50)]
    planted = {3: (17, 10), 21: (5, 8), 40: (120, 20)}  # eval row -> (train row, words copied)
    for i, (j, k) in planted.items():
        words = evals[i].split()
        evals[i] = " ".join(words[:10] + train[j].split()[:k] + words[10:])
    found = contamination(_rows(train), _rows(evals), n=8)
    assert set(found["eval_index"]) == set(planted)
    by_row = found.set_index("eval_index")
    for i, (j, k) in planted.items():
        shared = by_row.loc[i, "shared_ngrams"]
        assert len(shared) == k - 8 + 1  # every 8-word window of the copied span, nothing else
        assert all(g in " ".join(train[j].split()[:k]) for g in shared)
    assert found["overlap_ratio"].is_monotonic_decreasing and found.loc[0, "eval_index"] == 40


def test_contamination_on_the_dates_task():
    train, test = load_split("dates", "train"), load_split("dates", "test")

    def answer(row):  # the ISO date: "1990-06-18" -> the 3-gram "1990 06 18"; the prompts are templated
        return row["messages"][-1]["content"]

    assert contamination(train, test, n=3, text=answer).empty  # no day is in two splits (data/README.md)
    leaked = train + [test[7], test[42]]
    found = contamination(leaked, test, n=3, text=answer)
    assert set(found["eval_index"]) == {7, 42} and (found["overlap_ratio"] == 1.0).all()
    # the whole chats overlap through their shared instructions: why `text=` exists
    assert len(contamination(train, test, n=8)) > 50  # measured 90 of 100


def test_lm_eval_missing_names_the_install(monkeypatch, model_and_tokenizer):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install 'lm-eval"):
        benchmark(*model_and_tokenizer, ["ftlab_dates_mc"])


def test_dates_mc_file_is_what_its_script_writes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dates_mc", LM_EVAL_DIR / "make_dates_mc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = [json.loads(line) for line in (LM_EVAL_DIR / "dates_mc.jsonl").read_text().splitlines()]
    assert committed == module.rows() and len(committed) == 50


def test_general_mc_file_is_what_its_script_writes_and_gold_is_the_right_answer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_general_mc", LM_EVAL_DIR / "make_general_mc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = [json.loads(line) for line in (LM_EVAL_DIR / "general_mc.jsonl").read_text().splitlines()]
    assert committed == module.rows() and len(committed) == 40
    for row, (question, choices) in zip(committed, module.QUESTIONS):  # the first-written choice is the right one
        assert row["question"] == question and row["choices"][row["gold"]] == choices[0]
        assert sorted(row["choices"]) == sorted(choices) and len(set(choices)) == 4
    assert {r["gold"] for r in committed} == {0, 1, 2, 3}  # shuffled: the right answer is not always first
    from ftlab.evaluation import lm_eval_tasks

    assert "ftlab_general_mc" in {t["task"] for t in lm_eval_tasks()}


@pytest.mark.slow
def test_lm_eval_benchmark_on_local_tasks(model_and_tokenizer):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional: pip install lm-eval")
    table = benchmark(*model_and_tokenizer, ["ftlab_dates_mc", "ftlab_dates_gen"], limit=10)
    values = {(r.task, r.metric): r.value for r in table.itertuples()}
    print(table)
    assert set(values) == {("ftlab_dates_mc", "acc"), ("ftlab_dates_mc", "acc_norm"),
                           ("ftlab_dates_gen", "exact_match")}
    assert values[("ftlab_dates_mc", "acc")] >= 0.6  # measured 0.9 on 20 rows: the right date is likelier
    assert values[("ftlab_dates_gen", "exact_match")] <= 0.3  # the base model rarely answers in ISO (2%)


def train_task_adapter(make_adapter, task: str, out, steps: int = 12, batch: int = 8, lr: float = 2e-3):
    """A LoRA adapter trained for `steps` AdamW steps on data/<task>/train.jsonl, loss on the answers only.

    A plain loop rather than ftlab.training: a minute here instead of several (no TRL, no reports, no eval).
    """
    def batches(tok):
        rows = load_split(task, "train")
        for step in range(steps):
            ids, attn, mask = _batch(rows[step * batch:(step + 1) * batch], tok, 128)  # the training loss mask
            yield {"input_ids": ids, "attention_mask": attn, "labels": ids.masked_fill(mask == 0, -100)}

    return str(make_adapter(out, target_modules="all-linear", lora_alpha=16, random_init=False, batches=batches,
                            lr=lr))


@pytest.mark.slow
def test_combined_adapter_does_both_tasks(tmp_path, make_adapter):
    from ftlab.evaluation import combination_table

    adapters = {t: train_task_adapter(make_adapter, t, tmp_path / t) for t in ("dates", "numbers")}
    base, tok = load_model(verbose=False)
    tasks = {t: load_split(t, "test")[:16] for t in ("dates", "numbers")}  # 4 models x 2 tasks of answers
    table = combination_table(base, tok, adapters, tasks)
    print(table)
    assert list(table.index) == ["base", "dates", "numbers", "combined"]
    assert table.loc["dates", "dates"] > table.loc["base", "dates"]  # each adapter learned its task
    assert table.loc["numbers", "numbers"] > table.loc["base", "numbers"]
    # the combination does each task better than the adapter trained on the other one
    assert table.loc["combined", "dates"] > table.loc["numbers", "dates"]
    assert table.loc["combined", "numbers"] > table.loc["dates", "numbers"]
