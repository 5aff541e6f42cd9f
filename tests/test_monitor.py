"""Callbacks on a real transformers.Trainer with a tiny random Llama (2 layers, hidden 32, vocab 100), and diagnose."""

import json
import math

import matplotlib.pyplot as plt
import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from ftlab import monitor
from ftlab.monitor import LivePlot, MetricsLogger, NanGuard, diagnose, format_row

ROW_LEN, REAL = 16, 12  # tokens per row; the last 4 are padding


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def token_rows(n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, 100, (ROW_LEN,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * REAL + [0] * (ROW_LEN - REAL),
                     "labels": ids[:REAL] + [-100] * (ROW_LEN - REAL)})
    return rows


def run(tmp_path, callbacks, *, model=None, lr=1e-3, max_steps=4, **overrides):
    args = {"output_dir": str(tmp_path), "max_steps": max_steps, "per_device_train_batch_size": 4,
            "learning_rate": lr, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "use_cpu": True,
            "disable_tqdm": True, "include_num_input_tokens_seen": "non_padding", "seed": 0, **overrides}
    trainer = Trainer(model=model or tiny_model(), args=TrainingArguments(**args), train_dataset=token_rows(),
                      eval_dataset=token_rows(8), data_collator=default_data_collator, callbacks=callbacks)
    trainer.train()
    return trainer


def test_metrics_logger_writes_one_json_line_per_log_event(tmp_path, capsys):
    logger, plot, terminal_plot, guard = MetricsLogger(), LivePlot(), LivePlot(), NanGuard()
    widget = plot.widget  # embedded before training, as the course's panel does
    trainer = run(tmp_path, [logger, plot, terminal_plot, guard], eval_strategy="steps", eval_steps=2)

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(trainer.state.log_history) == len(logger.history) == 4 + 2 + 1  # train, eval, summary
    rows = [json.loads(line) for line in lines]
    train = [r for r in rows if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["learning_rate"] > 0 and r["grad_norm"] > 0 for r in train)
    assert all(r["tokens_per_s"] > 0 for r in train)
    assert [r["step"] for r in rows if r["event"] == "eval"] == [2, 4]
    assert rows[-1]["elapsed_s"] >= rows[0]["elapsed_s"] > 0
    assert trainer.state.num_input_tokens_seen == 4 * 4 * REAL  # non_padding: padding is not counted
    assert "step 4/4 | loss" in capsys.readouterr().out

    # LivePlot redrew the same figure into the same widget once per log event, and made no pyplot figure.
    assert plot.widget is widget and plot.updates == 1 + len(lines)
    assert bytes(widget.value[:4]) == b"\x89PNG"
    assert plt.get_fignums() == []
    # a LivePlot nobody displayed (a terminal) only keeps the history
    assert len(terminal_plot.history) == len(lines) and terminal_plot.updates == 0 and terminal_plot.fig is None
    # and NanGuard leaves a healthy run alone
    assert not guard.tripped and guard.message == "" and trainer.state.global_step == 4


def test_format_row_shows_only_what_the_row_has():
    row = {"step": 20, "loss": 1.2341, "eval_loss": None, "learning_rate": 1.9e-4, "tokens_per_s": 1234.4}
    assert format_row(row, 80) == "step 20/80 | loss 1.234 | lr 1.9e-04 | 1234 tok/s"
    assert format_row({"step": 20, "eval_loss": 1.3}, 80) == "step 20/80 | eval 1.300"


def test_metrics_logger_writes_nan_as_strict_json(tmp_path):
    logger = MetricsLogger(run_dir=tmp_path / "run", print_lines=False)
    state = type("State", (), {"global_step": 3, "epoch": 0.5, "num_input_tokens_seen": 0,
                               "is_world_process_zero": True, "max_steps": 10})()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    logger.on_log(args, state, None, logs={"loss": 1.0, "grad_norm": float("nan")})
    line = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=pytest.fail)["grad_norm"] == "nan"
    assert diagnose([json.loads(line)])  # and diagnose reads it back as NaN


def test_nan_guard_stops_an_absurd_learning_rate(tmp_path):
    guard = NanGuard()
    trainer = run(tmp_path, [guard], lr=1e30, max_steps=6, save_strategy="steps", save_steps=1)
    # step 1 moves every weight by ~1e30; step 2's activations overflow and its gradients are NaN
    assert guard.tripped and guard.step == 2 and trainer.state.global_step == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert "learning rate too high" in guard.message and "bf16" in guard.message


def test_nan_guard_skips_the_bad_step_of_a_nan_forward(tmp_path):
    model, calls, snapshot = tiny_model(), {"n": 0}, {}

    def nan_from_third_forward(module, inputs, output):
        calls["n"] += module.training
        return output * float("nan") if calls["n"] >= 3 else output

    model.lm_head.register_forward_hook(nan_from_third_forward)

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                snapshot.update({k: v.clone() for k, v in model.state_dict().items()})

    guard = NanGuard()
    trainer = run(tmp_path, [Snapshot(), guard], model=model, max_steps=8, save_strategy="steps", save_steps=1,
                  eval_strategy="steps", eval_steps=3)
    assert guard.tripped and guard.step == 3 and trainer.state.global_step == 3
    # the NaN gradients of step 3 were dropped: the weights are exactly those after step 2
    assert all(torch.equal(v, snapshot[k]) for k, v in trainer.model.state_dict().items())
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not any("eval_loss" in row for row in trainer.state.log_history)  # no evaluation of the bad state
    assert "step 3" in guard.message and "positions 8-11 of epoch 0" in guard.message


def test_live_plot_in_a_notebook_shows_one_widget_and_redraws_it(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(monitor, "_in_notebook", lambda: True)
    monkeypatch.setattr(monitor, "_show", shown.append)
    plot, embedded = LivePlot(every=2), LivePlot()
    panel = [embedded.widget]  # the caller put it in an HBox already: the callback must not show it a second time
    trainer = run(tmp_path, [plot, embedded], max_steps=4)
    assert shown == [plot.widget] and embedded.widget is panel[0]  # shown once, at train begin
    assert len(plot.history) == 5 and plot.updates == 1 + 2 + 1  # first draw, every 2nd log, the last log
    plot.on_train_begin(trainer.args, trainer.state, trainer.control)  # train() again, in a new cell
    assert shown == [plot.widget, plot.widget]


# --- diagnose on synthetic curves -------------------------------------------------------------------

def curve(losses, evals=None, eval_every=10):
    rows = [{"step": i + 1, "loss": v, "learning_rate": 2e-4} for i, v in enumerate(losses)]
    for i, v in enumerate(evals or []):
        rows.append({"step": (i + 1) * eval_every, "eval_loss": v})
    return rows


def healthy(n=60):
    wiggle = [0.02 * math.sin(3 * i) for i in range(n)]  # deterministic noise, a few percent
    return [2.5 * math.exp(-i / 20) + 0.6 + w for i, w in enumerate(wiggle)]


def test_diagnose_finds_nothing_wrong_in_a_healthy_curve():
    assert diagnose(curve(healthy(), evals=[2.0, 1.5, 1.2, 1.05, 1.0, 0.98])) == []


def test_diagnose_flat_loss():
    found = diagnose(curve([2.0 + 0.01 * math.sin(i) for i in range(40)]))
    assert len(found) == 1 and found[0].startswith("train loss did not go down") and "learning rate" in found[0]


def test_diagnose_overfitting_names_the_best_step():
    found = diagnose(curve(healthy(), evals=[2.0, 1.4, 1.2, 1.3, 1.5, 1.8]))
    assert len(found) == 1 and "lowest at step 30 (1.200)" in found[0] and "overfitting" in found[0]
    assert "EarlyStoppingCallback" in found[0] and "more training data" in found[0]


def test_diagnose_spike():
    losses = healthy()
    losses[40] = 4.0
    found = diagnose(curve(losses))
    assert len(found) == 1 and found[0].startswith("loss spiked at step 41") and "warmup" in found[0]


def test_diagnose_every_label_masked():
    found = diagnose(curve([0.0] * 20, evals=[float("nan")] * 2))
    assert len(found) == 2 and "every label is masked" in found[0] and "eval split is masked" in found[1]


def grpo_curve(rewards, zero_std):
    """GRPO's log: a loss of ~0 from step 1 (the group-mean baseline), the reward, the share of flat groups."""
    return [{"step": i + 1, "loss": 1e-8 * (-1) ** i, "reward": r, "frac_reward_zero_std": z}
            for i, (r, z) in enumerate(zip(rewards, zero_std))]


def test_diagnose_reads_a_grpo_run_by_its_reward_not_its_loss():
    rising = grpo_curve([1.0 + i / 40 for i in range(40)], [0.5] * 40)
    assert diagnose(rising) == []  # the loss neither fell nor was masked: GRPO's loss means neither
    flat = diagnose(grpo_curve([1.5 - 0.001 * i for i in range(40)], [0.9] * 40))
    assert len(flat) == 2 and flat[0].startswith("mean reward did not rise") and "90% of the groups" in flat[1]
    assert "temperature or num_generations" in flat[1]


def test_diagnose_nan():
    losses = healthy(30) + [float("nan")] * 3
    found = diagnose(curve(losses))
    assert len(found) == 1 and "NaN/inf at step 31" in found[0] and "bf16" in found[0]


def test_diagnose_ignores_an_fp16_overflow_that_recovered():
    rows = curve(healthy(30))
    rows[0]["grad_norm"], rows[-1]["grad_norm"] = float("inf"), 0.8
    assert diagnose(rows) == []
