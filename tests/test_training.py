"""Training end to end on the real SmolLM2-135M: the run folder, the masks, DPO, OOM retries, NaN, resume."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from ftlab.config import TrainConfig, load_config, resolve, save_config
from ftlab.examples import sft_example
from ftlab.hardware import choose_precision
from ftlab.lossmask import loss_mask
from ftlab.preflight import PreflightError, trl_problem
from ftlab.rewards import RewardError
from ftlab.tasks import exact_match
from ftlab.training import TrainingDiverged, fit_with_oom_retries, smaller_step, train

ROOT = Path(__file__).resolve().parent.parent
DATES = ROOT / "data" / "dates"


def tiny_file(tmp_path, name, n, source="train.jsonl"):
    """The first n rows of a data/dates file, so a test trains on a handful of rows."""
    path = tmp_path / name
    path.write_text("".join((DATES / source).read_text().splitlines(keepends=True)[:n]))
    return str(path)


def tiny_config(tmp_path, *overrides, out="run"):
    return load_config(None, [f"train_file={tiny_file(tmp_path, 'train.jsonl', 40)}", f"output_dir={tmp_path / out}",
                              "r=4", "lora_alpha=8", "learning_rate=1e-3", "max_steps=2", "max_length=128",
                              "per_device_train_batch_size=2", "logging_steps=1", "save_steps=100",
                              "warmup_ratio=0", *overrides])


# ---------------------------------------------------------------- the shared run (conftest.trained_run)


def test_run_folder_has_every_deliverable(trained_run):
    run = trained_run.run_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "finetune_config.yaml", "metrics.jsonl", "loss_curve.png", "lineage.json", "finetune_report.md"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    saved = yaml.safe_load((run / "finetune_config.yaml").read_text())
    assert saved["optim"] == ("adamw_8bit" if torch.cuda.is_available() else "adamw_torch")  # resolved
    assert saved["gradient_checkpointing"] is False
    assert saved["seed"] == 42 and saved["versions"]["trl"] and saved["versions"]["peft"]
    assert load_config(run / "finetune_config.yaml") == trained_run.config  # reloads as the same run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["event"] == "train"] == list(range(1, 9))
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["base_sha256"] and len(lineage["data_files"]) == 3
    report = (run / "finetune_report.md").read_text()
    for words in ("trainable parameters", "training time", "throughput", "peak memory", "final train loss",
                  "final eval loss", "exact match on `test.jsonl`", "(n=", "Wilson 95%", "## Generations", "## Diagnosis"):
        assert words in report


def test_report_numbers(trained_run):
    m = trained_run.metrics
    assert 0 < m["trainable_params"] < 0.05 * m["total_params"]
    assert m["tokens_per_s"] > 0 and m["peak_memory_mb"] > 100 and m["train_time_s"] > 0
    if torch.cuda.is_available():  # the frozen base in the GPU's 16-bit dtype (fp16 on a T4)
        from ftlab.models import default_compute_dtype

        expected = default_compute_dtype()
    else:  # bf16 on a CPU that trains under bf16 autocast, else fp32
        expected = torch.bfloat16 if choose_precision().cpu_autocast_bf16 else torch.get_default_dtype()
    assert m["base_dtype"] == str(expected).removeprefix("torch.")
    assert m["n_test"] == 16 and len(m["samples"]) == 5
    assert m["tuned_exact_match"] > m["base_exact_match"]  # 8 steps already teach the ISO format
    table = m["eval_table"]  # ftlab.evaluation on the test rows: the report's evaluation table
    assert list(table.index) == ["base", "tuned"]
    assert table.loc["tuned", "exact_match"] == m["tuned_exact_match"]
    assert table.loc["tuned", "loss"] < table.loc["base", "loss"]  # the reference answers got likelier
    assert (table["perplexity"] > 1).all() and (table["contains"] >= table["exact_match"]).all()
    report = (trained_run.run_dir / "finetune_report.md").read_text()
    assert "## Evaluation" in report and "perplexity" in report


@pytest.mark.slow
def test_benchmark_table_goes_into_the_report(trained_run, tmp_path):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional: pip install lm-eval")
    from ftlab import report
    from ftlab.evaluation import _benchmark_base_and_tuned

    cfg = load_config("dates_smoke", ["benchmark_tasks=ftlab_dates_mc", "benchmark_limit=8"])
    table = _benchmark_base_and_tuned(cfg, trained_run.model, trained_run.tokenizer, None)
    assert set(table["task"]) == {"ftlab_dates_mc"} and {"base", "tuned"} <= set(table.columns)
    acc = table.set_index("metric").loc["acc"]
    docs = [json.loads(line) for line in (ROOT / "data" / "lm_eval" / "dates_mc.jsonl").read_text().splitlines()[:8]]
    with trained_run.model.disable_adapter():
        base_right, base_close = _mc_right(trained_run.model, trained_run.tokenizer, docs)
    tuned_right, tuned_close = _mc_right(trained_run.model, trained_run.tokenizer, docs)
    # lm-eval agrees with the count by hand, up to documents whose best two choices are a near tie
    assert abs(acc["base"] * 8 - base_right) <= base_close, (acc["base"], base_right, base_close)
    assert abs(acc["tuned"] * 8 - tuned_right) <= tuned_close, (acc["tuned"], tuned_right, tuned_close)
    path = report.write_report(tmp_path, {"method": "lora", "benchmark_table": table})
    assert "## Benchmarks (lm-evaluation-harness)" in path.read_text() and "ftlab_dates_mc" in path.read_text()


def _mc_right(model, tok, docs, tie: float = 0.05) -> tuple[int, int]:
    """lm-eval's multiple-choice rule by hand: (documents whose gold choice is likeliest, near ties under `tie` nats).

    The context is the chat-templated question (no delimiter before the choice under a chat template);
    a choice's score is the sum of its tokens' log-probabilities after that context.
    """
    right = close = 0
    for doc in docs:
        ctx = tok.apply_chat_template([{"role": "user", "content": doc["question"]}], tokenize=False,
                                      add_generation_prompt=True)
        n_ctx = len(tok(ctx.rstrip(), add_special_tokens=False)["input_ids"])  # lm-eval moves trailing space over
        scores = []
        for choice in doc["choices"]:
            ids = tok(ctx + choice, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
                logp = logits.float().log_softmax(-1)
            scores.append(sum(logp[i - 1, ids[i]].item() for i in range(n_ctx, len(ids))))
        best = sorted(scores, reverse=True)
        right += scores.index(best[0]) == doc["gold"]
        close += best[0] - best[1] < tie
    return right, close


def test_loss_goes_down(trained_run):
    losses = [h["loss"] for h in trained_run.history if "loss" in h]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0]
    evals = [h["eval_loss"] for h in trained_run.history if "eval_loss" in h]
    assert evals[1] < evals[0] or evals[-1] < evals[0]  # and the validation loss follows


def test_training_labels_are_the_loss_mask(trained_run):
    """What SFTTrainer trains on is exactly what ftlab.lossmask shows: labels -100 outside the mask."""
    first = json.loads((DATES / "train.jsonl").read_text().splitlines()[0])
    view = loss_mask(first, trained_run.tokenizer)
    example = trained_run.trainer.train_dataset[0]  # SFT data are not shuffled before the sampler
    assert example["input_ids"] == view.input_ids
    assert example["labels"] == [t if m else -100 for t, m in zip(view.input_ids, view.mask)]
    answer = trained_run.tokenizer.decode([t for t in example["labels"] if t != -100])
    assert answer == first["messages"][-1]["content"] + "<|im_end|>"  # the answer and its end-of-turn token


def test_adapter_loads_with_plain_peft_in_a_fresh_process(trained_run, tmp_path):
    model, tok = trained_run.model.eval(), trained_run.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Give the ISO date: 3 May 2001"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids.to(model.device)).logits[0, -1].float().cpu()
    torch.save({"ids": ids, "expected": expected}, tmp_path / "probe.pt")
    dtype = str(model.get_base_model().lm_head.weight.dtype)  # the base as trained: bf16 on a bf16 CPU
    attn = model.config._attn_implementation  # eager on a CPU for short rows: same kernels, same numbers
    device = str(model.device)
    # a CPU: the same kernels, the same numbers; a GPU: 16-bit logits (~20) from other kernels (Unsloth's,
    # if it trained), so a few bf16 steps of 0.06-0.125 apart. Not yet run on a GPU
    atol = 1e-4 if device == "cpu" else 0.5
    script = textwrap.dedent(f"""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        probe = torch.load({str(tmp_path / 'probe.pt')!r})
        base = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", dtype={dtype},
                                                    attn_implementation={attn!r}).to({device!r})
        model = PeftModel.from_pretrained(base, {str(trained_run.run_dir)!r}).eval()
        with torch.no_grad():
            got = model(input_ids=probe["ids"].to({device!r})).logits[0, -1].float().cpu()
        assert "ftlab" not in __import__("sys").modules
        print("max diff", (got - probe["expected"]).abs().max().item())
        assert torch.allclose(got, probe["expected"], atol={atol}), (got - probe["expected"]).abs().max()
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- data preparation (tokenizer only)


def test_completion_only_masks_earlier_assistant_turns(tokenizer):
    row = {"prompt": [{"role": "user", "content": "Date: 1 May 2020"}, {"role": "assistant", "content": "2020-05-01"},
                      {"role": "user", "content": "And 2 May 2020?"}],
           "completion": [{"role": "assistant", "content": "2020-05-02"}]}
    cfg = load_config()
    ex = sft_example(row, tokenizer, cfg)
    kept = tokenizer.decode([t for t, m in zip(ex["input_ids"], ex["assistant_masks"]) if m])
    assert kept == "2020-05-02<|im_end|>"
    off = load_config(None, ["completion_only_loss=false"])
    assert all(sft_example(row, tokenizer, off)["assistant_masks"])


def test_examples_carry_their_labels_and_the_trainer_keeps_them(tokenizer, trained_run):
    """The labels are ftlab's (-100 off the answers), not rebuilt by TRL or Unsloth (issue 14, M5)."""
    row = {"messages": [{"role": "user", "content": "Date: 1 May 2020"}, {"role": "assistant", "content": "2020-05-01"}]}
    ex = sft_example(row, tokenizer, load_config())
    assert [t for t in ex["labels"] if t != -100] == [t for t, m in zip(ex["input_ids"], ex["assistant_masks"]) if m]
    assert ex["labels"][0] == -100 and len(ex["labels"]) == len(ex["input_ids"])
    first = trained_run.trainer.train_dataset[0]  # what the trainer trains on, after TRL's preparation
    kept = [t for t in first["labels"] if t != -100]
    assert -100 in first["labels"] and tokenizer.decode(kept).endswith("<|im_end|>"), tokenizer.decode(kept)
    assert "Output" not in tokenizer.decode(kept) and "user" not in tokenizer.decode(kept)


def test_chat_rows_train_on_every_assistant_turn(tokenizer):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b1"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d2"}]}
    ex = sft_example(row, tokenizer, load_config())
    assert ex["assistant_masks"] == loss_mask(row, tokenizer).mask
    assert tokenizer.decode([t for t, m in zip(ex["input_ids"], ex["assistant_masks"]) if m]) == \
        "b1<|im_end|>d2<|im_end|>"
    assert all(sft_example(row, tokenizer, load_config(None, ["assistant_only_loss=false"]))["assistant_masks"])


# ---------------------------------------------------------------- OOM safety net


def test_smaller_step_keeps_the_effective_batch():
    cfg = resolve(load_config(None, ["per_device_train_batch_size=8", "gradient_accumulation_steps=2"]))
    seen = []
    while (step := smaller_step(cfg)) is not None:
        cfg, _ = step
        seen.append((cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing))
    assert seen == [(4, 4, False), (2, 8, False), (1, 16, False), (1, 16, True)]


def test_oom_gives_up_with_a_recommendation(capsys):
    def attempt(cfg):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(RuntimeError, match="method=qlora.*shorter max_length"):
        fit_with_oom_retries(resolve(load_config(None, ["per_device_train_batch_size=4"])), attempt)
    printed = capsys.readouterr().out
    assert printed.count("out of GPU memory; retrying") == 3
    assert "per_device_train_batch_size 4 -> 2, gradient_accumulation_steps 1 -> 2" in printed
    assert "gradient_checkpointing off -> on" in printed


@pytest.mark.slow
def test_oom_retry_through_train(tmp_path, monkeypatch, capsys):
    """A simulated CUDA OOM at batch size > 1: train() retries at 2 x 2, then 1 x 4, and finishes."""
    from trl import SFTTrainer

    tried, real_train = [], SFTTrainer.train

    def oom_unless_batch_1(self, *args, **kwargs):
        tried.append((self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps))
        if self.args.per_device_train_batch_size > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "train", oom_unless_batch_1)
    result = train(tiny_config(tmp_path, "per_device_train_batch_size=4", "max_steps=1"))
    assert tried == [(4, 1), (2, 2), (1, 4)]
    assert (result.config.per_device_train_batch_size, result.config.gradient_accumulation_steps) == (1, 4)
    assert result.trainer.state.global_step == 1 and (result.run_dir / "adapter_model.safetensors").exists()
    printed = capsys.readouterr().out
    assert "retrying with per_device_train_batch_size 2 -> 1" in printed
    levers = [line for line in printed.splitlines() if line.startswith("ftlab: CPU levers for this processor")]
    assert len(levers) == (0 if torch.cuda.is_available() else 1), levers  # once, not again on the retry


# ---------------------------------------------------------------- NaN, DPO, resume


@pytest.mark.slow
def test_nan_stops_with_causes_and_the_last_good_checkpoint(tmp_path):
    from transformers import TrainerCallback

    class PoisonAtStep2(TrainerCallback):  # after checkpoint-1 is written, a LoRA weight turns NaN
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    cfg = tiny_config(tmp_path, "max_steps=4", "save_steps=1")
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, callbacks=[PoisonAtStep2()])
    msg = str(err.value)
    assert "step 2" in msg and "learning rate" in msg and "bf16" in msg and "row" in msg
    assert "checkpoint-1" in msg and not (tmp_path / "run" / "checkpoint-2").exists()


@pytest.mark.slow
def test_dpo_a_few_steps(tmp_path):
    prefs = tiny_file(tmp_path, "prefs.jsonl", 8, source="preference_train.jsonl")
    cfg = tiny_config(tmp_path, "task=dpo", f"train_file={prefs}", "max_steps=2", "learning_rate=5e-4")
    result = train(cfg)
    assert type(result.trainer).__name__ == "DPOTrainer"
    assert result.trainer.ref_model is None  # the reference is the base: the adapter switched off
    logged = [h for h in result.history if "loss" in h]
    assert len(logged) == 2 and "rewards/margins" in logged[0]
    assert logged[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # step 1: policy == reference, loss = ln 2
    assert (result.run_dir / "adapter_model.safetensors").exists() and (result.run_dir / "finetune_report.md").exists()
    with pytest.raises(ValueError, match="task=dpo needs prompt/chosen/rejected rows.*Fix: set task=sft"):
        train(tiny_config(tmp_path, "task=dpo", out="bad"))


@pytest.mark.slow
def test_kto_and_orpo_a_few_steps_on_the_same_pairs(tmp_path):
    prefs = tiny_file(tmp_path, "prefs.jsonl", 8, source="preference_train.jsonl")
    kto = train(tiny_config(tmp_path, "task=kto", f"train_file={prefs}", "learning_rate=5e-4", out="kto"))
    assert type(kto.trainer).__name__ == "KTOTrainer" and kto.trainer.ref_model is None
    assert len(kto.trainer.train_dataset) == 16  # 8 pairs -> 8 desirable + 8 undesirable answers
    first = next(h for h in kto.history if "loss" in h)
    # step 1: policy == reference, so every log-ratio and the KL estimate are 0 and each answer's loss is
    # 1 - sigmoid(0) = 0.5, desirable or not (KTO, Ethayarajh et al. 2024, eq. 8)
    assert first["loss"] == pytest.approx(0.5, abs=1e-3)
    orpo = train(tiny_config(tmp_path, "task=orpo", f"train_file={prefs}", "learning_rate=5e-4", "beta=0.1", out="orpo"))
    assert type(orpo.trainer).__name__ == "ORPOTrainer"
    first = next(h for h in orpo.history if "loss" in h)
    # ORPO's loss is SFT's NLL on the chosen answer minus beta x log sigmoid(log odds ratio), logged apart
    assert first["loss"] == pytest.approx(first["nll_loss"] - 0.1 * first["log_odds_ratio"], abs=1e-3)
    assert (orpo.run_dir / "adapter_model.safetensors").exists() and (kto.run_dir / "finetune_report.md").exists()
    with pytest.raises(ValueError, match="task=kto needs prompt/chosen/rejected rows.*Fix: set task=sft"):
        train(tiny_config(tmp_path, "task=kto", out="bad"))


def test_unpaired_rows_for_kto():
    from ftlab.data import convert, unpaired

    pairs = convert(DATES / "preference_train.jsonl").rows[:3]
    rows = unpaired(pairs)
    assert [r["label"] for r in rows] == [True, False] * 3
    assert rows[0]["completion"] == pairs[0]["chosen"] and rows[1]["completion"] == pairs[0]["rejected"]
    assert rows[1]["prompt"] == pairs[0]["prompt"]
    with pytest.raises(ValueError, match="row 0 .*not prompt/chosen/rejected"):
        unpaired([{"messages": []}])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "prompt"])
def test_other_methods_train_and_score(tmp_path, method):
    """Full fine-tuning (no adapter: the base is reloaded to score it) and prompt tuning (virtual tokens)."""
    test = tiny_file(tmp_path, "test.jsonl", 4, source="test.jsonl")
    result = train(tiny_config(tmp_path, f"method={method}", f"test_file={test}", "max_steps=2"))
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (result.run_dir / weights).is_file()
    assert result.metrics["n_test"] == 4
    answers = result.metrics["samples"]  # all 4 test rows: the base's and the tuned model's answers
    assert result.metrics["base_exact_match"] == sum(exact_match(a["base"], a["reference"]) for a in answers) / 4
    assert result.metrics["tuned_exact_match"] == sum(exact_match(a["tuned"], a["reference"]) for a in answers) / 4
    if method == "full":
        assert result.metrics["trainable_params"] == result.metrics["total_params"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """Kill a run with SIGKILL after its step-4 checkpoint, resume it: steps 5-6 and the adapter match a straight run."""
    from safetensors.torch import load_file

    common = ["max_steps=6", "save_steps=2", "save_total_limit=null", "lora_dropout=0.1"]  # dropout: RNG restored too
    straight = train(tiny_config(tmp_path, *common, out="straight"))

    cfg = tiny_config(tmp_path, *common, out="killed")
    save_config(cfg, tmp_path / "killed.yaml")
    script = textwrap.dedent(f"""
        import os, signal
        from transformers import TrainerCallback
        from ftlab.config import load_config
        from ftlab.training import train

        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 5:  # checkpoint-4 is on disk, step 5 is not
                    os.kill(os.getpid(), signal.SIGKILL)

        train(load_config({str(tmp_path / 'killed.yaml')!r}), callbacks=[Kill()])
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoint-4").is_dir() and not (tmp_path / "killed" / "checkpoint-6").exists()

    resumed = train(load_config(tmp_path / "killed.yaml", ["resume_from_checkpoint=true"]))
    losses = {h["step"]: h["loss"] for h in resumed.history if "loss" in h}
    expected = {h["step"]: h["loss"] for h in straight.history if "loss" in h}
    assert sorted(losses) == list(range(1, 7))  # steps 1-4 come from the checkpoint's trainer_state.json
    for step in (5, 6):
        assert losses[step] == pytest.approx(expected[step], rel=1e-4)
    a = load_file(straight.run_dir / "adapter_model.safetensors")
    b = load_file(resumed.run_dir / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint-\\* folder"):
        train(tiny_config(tmp_path, "resume_from_checkpoint=true"))


def _train_losses(run_dir) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"], r["loss"]) for r in rows if r["event"] == "train"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """`ftlab train` under torchrun: 2 CPU processes x batch 2 log the losses of 1 process x batch 4.

    The claim is arithmetic (DDP computes what one process computes), so both runs train in fp32
    (bf16=false): bf16 autocast rounds differently shaped batches differently, by 0.6% on an AMX CPU and
    1.8% on an AVX512-BF16 one. In fp32 only the order of the sums differs, so 1e-4 relative holds on every
    processor. Dropout is off so both runs draw the same numbers, and batches are random (not length-grouped).
    Only process 0 writes the run folder, so each step is logged once.
    """
    job = ["dates_smoke", "eval_file=null", "test_file=null", "max_steps=3", "lora_dropout=0", "save_steps=100",
           "logging_steps=1", "bf16=false",
           "group_by_length=false"]  # length groups are cut per device batch: a different order on 2 processes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}  # CPU processes on a GPU machine too: 2 ranks would want 2 GPUs
    subprocess.run([sys.executable, "-m", "ftlab.cli", "train", *job, f"output_dir={tmp_path / 'one'}",
                    "per_device_train_batch_size=4"], check=True, cwd=tmp_path, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "ftlab.cli", "train", *job, f"output_dir={tmp_path / 'two'}",
                    "per_device_train_batch_size=2"], check=True, cwd=tmp_path, env=env, capture_output=True)
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert [s for s, _, _ in one] == [s for s, _, _ in two] == [1, 2, 3]
    assert [e for _, e, _ in one] == [e for _, e, _ in two]  # the same share of the data per step: sharded
    for (_, _, a), (_, _, b) in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4), (one, two)


def four_dates_chats(tok, cfg):
    """A fixed batch: the first 4 chats of data/dates/train.jsonl as ftlab tokenizes them, right-padded.
    Returns (examples, input ids, attention mask, assistant mask, labels: -100 off the assistant mask)."""
    examples = [sft_example(json.loads(line), tok, cfg)
                for line in (DATES / "train.jsonl").read_text().splitlines()[:4]]
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.tensor([e["input_ids"] + [tok.pad_token_id] * (width - len(e["input_ids"])) for e in examples])
    attn = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples])
    keep = torch.tensor([e["assistant_masks"] + [0] * (width - len(e["input_ids"])) for e in examples])
    return examples, ids, attn, keep, ids.masked_fill(keep == 0, -100)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU switch: on CUDA TRL scores loss positions only")
def test_scoring_loss_positions_only_keeps_loss_and_gradients():
    """ftlab's CPU switch to TRL's compact LM head: the same loss and LoRA gradients as scoring every position."""
    import trl.trainer.utils as trl_utils
    from peft import LoraConfig, get_peft_model

    from ftlab.models import load_model
    from ftlab.speed import loss_positions_only

    if not hasattr(trl_utils, "_use_triton"):
        pytest.skip("this TRL has no CPU loss path to switch (TRL 1.15: see ftlab.preflight.trl_problem)")
    torch.manual_seed(0)
    model, tok = load_model(verbose=False)
    trl_utils.add_fused_lm_head(model)  # what SFTTrainer does to the model it trains
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                             init_lora_weights=False))  # random B: non-zero gradients everywhere
    _, ids, attn, keep, labels = four_dates_chats(tok, load_config(None))
    assert 0 < keep.sum() < 0.5 * attn.sum()  # most positions carry no loss: what the switch skips
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads():
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in trainable]

    original = trl_utils._use_triton
    try:
        trl_utils._use_triton = lambda device: False  # TRL's choice on a CPU: score every position
        every_loss, every_grads = loss_and_grads()
        cpu_choice = trl_utils._use_triton
        with loss_positions_only() as switched:
            assert switched and trl_utils._use_triton(torch.device("cpu"))
            compact_loss, compact_grads = loss_and_grads()
        assert trl_utils._use_triton is cpu_choice  # TRL's own function is back after the block
    finally:
        trl_utils._use_triton = original
    assert abs(every_loss - compact_loss) < 1e-5 * every_loss
    for a, b in zip(every_grads, compact_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_tensorboard_when_asked(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config(tmp_path, "report_to=tensorboard"))
    events = sorted(Path(result.run_dir).rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {result.run_dir}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) == 2 and all(v > 0 for v in losses)  # one per logging step, the trainer's own losses


def test_trl_without_a_cpu_loss_path_is_refused_before_loading_anything(monkeypatch, tmp_path):
    import trl

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trl, "__version__", "1.16.0")
    assert trl_problem() is None  # 1.16 has the torch path
    monkeypatch.setattr(trl, "__version__", "1.15.2")  # Unsloth's newest allowed: Triton-only loss
    with pytest.raises(PreflightError, match=r"TRL 1\.15\.2 .*CUDA GPU.*pip install -U 'trl>=1\.16'"):
        train(TrainConfig(train_file=str(ROOT / "data/dates/train.jsonl"), output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # refused before the run folder or the model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4
    assert trl_problem() is None  # on a GPU TRL 1.15 trains (Triton ships with CUDA PyTorch)


# ---------------------------------------------------------------- GRPO


@pytest.mark.slow
def test_grpo_a_few_steps_from_a_warm_start(tmp_path):
    """Warm start (SFT, merged) -> 2 GRPO steps with the shipped rewards -> before/after in the report."""
    test = tiny_file(tmp_path, "test.jsonl", 4, source="test.jsonl")
    cfg = tiny_config(tmp_path, "task=grpo", "warm_start_steps=2", "reward_funcs=[exact_date,date_fields]",
                      "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=8",
                      f"test_file={test}", "learning_rate=5e-4")
    result = train(cfg)
    assert type(result.trainer).__name__ == "GRPOTrainer"
    assert (result.run_dir / "warm_start" / "adapter_config.json").is_file()
    logged = [h for h in result.history if "loss" in h]
    assert len(logged) == 2 and {"rewards/exact_date/mean", "rewards/date_fields/mean",
                                 "frac_reward_zero_std"} <= set(logged[0])
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/date_fields/mean" in rows[0]  # the reward curves reach metrics.jsonl
    m = result.metrics
    assert m["n_test"] == 4 and 0 <= m["base_mean_reward"] <= 2 and len(m["reward_table"]) == 6
    report = (result.run_dir / "finetune_report.md").read_text()
    assert "before GRPO (starting policy)" in report and "## Rewards on the test split" in report

    def broken(completions, **kwargs):
        return [1 / 0 for _ in completions]

    with pytest.raises(RewardError, match="reward function broken raised ZeroDivisionError.*on completion") as err:
        train(dataclasses.replace(cfg, output_dir=str(tmp_path / "broken"), test_file=None), reward_funcs=[broken])
    assert err.value.__cause__ is None  # no TRL traceback chained under the learner's message
    assert yaml.safe_load((tmp_path / "broken" / "warm_start" / "finetune_config.yaml").read_text())["task"] == "sft"


@pytest.mark.slow
def test_continued_pretraining_lowers_the_perplexity_of_held_out_text(tmp_path):
    text = ROOT / "data" / "text"
    cfg = tiny_config(tmp_path, "task=cpt", f"train_file={text / 'train.txt'}", f"test_file={text / 'test.txt'}",
                      "test_limit=6", "max_steps=4", "max_length=64", "per_device_train_batch_size=4",
                      "learning_rate=2e-3", "r=8", "lora_alpha=16")
    result = train(cfg)
    lengths = {len(ids) for ids in result.trainer.train_dataset["input_ids"]}
    assert max(lengths) == 64 and len(lengths) <= 2  # packed (wrapped): full windows, only the last one shorter
    m = result.metrics
    assert m["n_test"] == 6 and m["tuned_perplexity"] < m["base_perplexity"], m  # the invented port's style, learned
    report = (result.run_dir / "finetune_report.md").read_text()
    assert "perplexity on `test.txt`: base" in report
    with pytest.raises(PreflightError, match=r"train_file=.*holds openai rows, but task=cpt trains on raw text"):
        train(tiny_config(tmp_path, "task=cpt", out="chats"))


class _Loaded(Exception):
    """Raised by the stand-in loader once it has what train() asked for."""


@pytest.mark.parametrize(("method", "precision", "expected"), [
    ("lora", "fp16", (torch.float16, None)),
    ("qlora", "fp16", (torch.float16, torch.float16)),
    ("full", "fp16", (torch.float32, None)),  # fp16 mixed precision keeps fp32 master weights
    ("lora", "cpu_bf16", (torch.bfloat16, None)),
    ("lora", "fp32", (None, None)),
])
def test_the_base_follows_the_chosen_precision(tmp_path, monkeypatch, method, precision, expected):
    """bf16=false on an Ampere or newer GPU (or a T4) trains in fp16: the base and the 4-bit matmuls must be fp16
    too, not load_model's bf16 default (Unsloth refuses a bf16 model under fp16 training). Faked GPU precision;
    the loader records what train() asks for."""
    from ftlab import training
    from ftlab.hardware import Precision

    chosen = {"fp16": Precision(False, True, False, "fp16 (faked GPU)"),
              "cpu_bf16": Precision(False, False, True, "bf16 autocast (faked CPU)"),
              "fp32": Precision(False, False, False, "fp32")}[precision]
    asked = {}

    def loader(name, **kwargs):
        asked.update(kwargs)
        raise _Loaded

    monkeypatch.setattr(training, "choose_precision", lambda bf16=None: chosen)
    monkeypatch.setattr(training, "load_model", loader)
    with pytest.raises(_Loaded):
        train(tiny_config(tmp_path, f"method={method}"))
    assert (asked["dtype"], asked["compute_dtype"]) == expected, asked
    assert asked["load_in_4bit"] == (method == "qlora")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU levers: on a GPU none of them applies")
def test_every_cpu_lever_keeps_the_loss_and_gradients_of_the_plain_path():
    """Issue 16: each lever ftlab's CPU path may switch on (ftlab.speed) against the plain path (SDPA, fp32,
    no autocast) on one fixed batch of 4 dates chats with loss on the answers: eager attention gives the same
    numbers up to fp32 summation order; the bf16 base under bf16 autocast, on a CPU with bf16 instructions
    (where ftlab takes it), within bf16 rounding. The LM-head switch has its own test above."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    from ftlab import speed
    from ftlab.hardware import Precision, cpu_has_bf16
    from ftlab.models import load_model

    cfg = load_config(None, ["max_length=128", "per_device_train_batch_size=4"])
    _, tok = load_model(verbose=False)
    examples, ids, attn, _, labels = four_dates_chats(tok, cfg)

    def loss_and_grads(*, eager=False, bf16=False):
        precision = Precision(False, False, bf16, "test")
        model, _ = load_model(dtype=speed.bf16_base(cfg, precision), backend="transformers", verbose=False)
        assert model.config._attn_implementation == "sdpa"  # the plain path's attention
        if eager:
            assert speed.eager_attention(model, Dataset.from_dict({"input_ids": [e["input_ids"] for e in examples]}),
                                         cfg)
        torch.manual_seed(0)  # the same random A and B on every path
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0,
                                                 init_lora_weights=False))  # random B: non-zero gradients
        with speed.autocast(precision):
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        return loss.item(), grads

    plain_loss, plain = loss_and_grads()
    eager_loss, eager = loss_and_grads(eager=True)
    assert eager_loss == pytest.approx(plain_loss, rel=1e-5)
    eager_gap = ((eager - plain).norm() / plain.norm()).item()  # fp32 sums in another order: 5.5e-6 there
    assert eager_gap < 1e-4, eager_gap
    print(f"loss plain {plain_loss:.5f}, eager attention {eager_loss:.5f}; gradient gap {eager_gap:.1e}")
    if not cpu_has_bf16():  # ftlab never takes the bf16 levers here, and emulated bf16 took 200 s (AVX2 EPYC)
        print("bf16 base + autocast not checked: this CPU has no bf16 instructions")
        return
    bf16_loss, bf16 = loss_and_grads(bf16=True)
    # bf16 keeps 8 bits of mantissa. Measured under emulation on the AVX2 EPYC: loss 2.1195 vs 2.1047 (0.7%),
    # gradient gap (norm of the difference / norm) 8.9e-2, cosine 0.996
    assert bf16_loss == pytest.approx(plain_loss, rel=2e-2)
    bf16_gap = ((bf16 - plain).norm() / plain.norm()).item()
    assert torch.nn.functional.cosine_similarity(bf16, plain, dim=0) > 0.98, bf16_gap
    print(f"bf16 base + autocast {bf16_loss:.5f}; gradient gap {bf16_gap:.1e}")


@pytest.mark.parametrize(("instructions", "bf16", "on", "off"), [
    ("AMX", True, "bf16 frozen base, bf16 autocast, eager attention, length-grouped batches, LM head", None),
    ("AVX512-BF16", True, "bf16 frozen base, bf16 autocast, eager attention", None),
    ("neither", False, "eager attention, length-grouped batches, LM head on loss positions only",
     "bf16 frozen base and bf16 autocast (no bf16 instructions: emulated bf16 is slower than fp32)"),
    ("AMX", False, "eager attention", "bf16 frozen base and bf16 autocast (fp32 chosen: see the precision line)"),
])
def test_the_levers_line_names_what_is_on_and_off_and_why(instructions, bf16, on, off):
    """Issue 16: one line says which CPU levers a run takes by what the processor has (as the precision line
    does for the dtype); fp32 chosen on a bf16 CPU (Binder's 2 GB, bf16=false) is named apart from no bf16."""
    from ftlab.hardware import Precision
    from ftlab.speed import levers_line

    line = levers_line(load_config(None), Precision(False, False, bf16, "test"), eager=True, loss_positions=True,
                       instructions=instructions)
    assert line.startswith(f"CPU levers for this processor ({instructions if instructions != 'neither' else 'AVX2'}")
    assert f"on: {on}" in line, line
    assert (f"off: {off}" in line) if off else ("off:" not in line), line
    unswitched = levers_line(load_config(None, ["group_by_length=false"]), Precision(False, False, False, "t"),
                             eager=False, loss_positions=False, instructions="neither")
    assert "on: none; off: " in unswitched and "eager attention (long rows or no SDPA" in unswitched, unswitched
    assert "length-grouped batches (group_by_length=false)" in unswitched and "(this TRL has no switch)" in unswitched

