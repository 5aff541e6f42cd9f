"""Watch a training run: log its metrics, stop it on NaN, plot it live, and read the curves afterwards.

Three `transformers.TrainerCallback`s, passed as `Trainer(..., callbacks=[...])`:
  MetricsLogger  one JSON line per log event in <run_dir>/metrics.jsonl, plus a compact printed line
  NanGuard       stops training, and skips the optimizer step, the moment a gradient turns NaN/inf
  LivePlot       one loss/learning-rate figure that redraws in place in a notebook
and `diagnose(history)`, which turns the logged curves into plain-language advice.
Leaves out: the progress bar (the Trainer's own) and the saved PNG (`curves.py`) and markdown report (`report.py`).
"""

from __future__ import annotations

import io
import json
import math
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ftlab.curves import draw_curves, series

FIELDS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "elapsed_s")
RL_FIELDS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length")  # GRPO's logs,
#   plus every rewards/<function>/mean and /std


def _in_notebook() -> bool:
    """True inside a Jupyter / Colab kernel (which has a `kernel`), False in a terminal or plain IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _show(widget) -> None:
    from IPython.display import display

    display(widget)


def _jsonable(value):
    # Strict JSON has no NaN: write non-finite numbers as "nan"/"inf", which float() reads back.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger(TrainerCallback):
    """Append one JSON line per log event to <run_dir>/metrics.jsonl and keep the rows in `.history`.

    run_dir: defaults to the Trainer's `output_dir`. A fresh run (global step 0) starts a fresh file;
        a run resumed from a checkpoint appends to it.
    print_lines: print `step 20/80 | loss 1.234 | lr 1.9e-04 | 1234 tok/s` per event in a terminal
        (in a notebook the LivePlot and the Trainer's table show the same).
    tokens_per_s needs `TrainingArguments(include_num_input_tokens_seen="non_padding")` ("all" counts padding).
    """

    def __init__(self, run_dir=None, print_lines: bool = True):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.print_lines = print_lines
        self.history: list[dict] = []
        self.path: Path | None = None

    def _start(self, args, state) -> None:
        self.path = Path(self.run_dir or args.output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if state.global_step == 0:
            self.path.write_text("")
            self.history = []
        self._t0 = self._t_last = time.perf_counter()
        self._tokens_last = state.num_input_tokens_seen

    def on_train_begin(self, args, state, control, **kwargs):
        self._start(args, state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._t_last = time.perf_counter()  # evaluation time is not training throughput

    def on_save(self, args, state, control, **kwargs):
        self._t_last = time.perf_counter()  # nor is writing a checkpoint

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return  # with several GPUs every process logs; one file is enough
        if self.path is None:  # trainer.evaluate() called before any training
            self._start(args, state)
        row = self._row(state, logs or {})
        self.history.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, allow_nan=False) + "\n")
        if self.print_lines and not _in_notebook() and row["event"] != "summary":
            from tqdm.auto import tqdm

            tqdm.write(format_row(row, state.max_steps))  # tqdm.write keeps the progress bar intact

    def _row(self, state, logs: dict) -> dict:
        now = time.perf_counter()
        row = {k: logs.get(k) for k in FIELDS}
        row |= {k: v for k, v in logs.items() if k in RL_FIELDS or k.startswith(("rewards/", "eval_rewards/"))}
        row.update(step=state.global_step, epoch=logs.get("epoch", state.epoch), elapsed_s=round(now - self._t0, 3))
        row["event"] = "train" if "loss" in logs else "eval" if "eval_loss" in logs else "summary"
        tokens = logs.get("num_input_tokens_seen")
        if row["event"] == "train" and tokens is not None:
            row["tokens_per_s"] = round((tokens - self._tokens_last) / max(now - self._t_last, 1e-9), 1)
            self._tokens_last, self._t_last = tokens, now
        return row


def format_row(row: dict, max_steps: int | None = None) -> str:
    """`step 20/80 | loss 1.234 | eval 1.300 | lr 1.9e-04 | 1234 tok/s`, with only the parts the row has."""
    parts = [f"step {row['step']}/{max_steps}" if max_steps else f"step {row['step']}"]
    for key, fmt in (("loss", "loss {:.3f}"), ("eval_loss", "eval {:.3f}"),
                     ("learning_rate", "lr {:.1e}"), ("tokens_per_s", "{:.0f} tok/s")):
        if row.get(key) is not None:
            parts.append(fmt.format(float(row[key])))
    return " | ".join(parts)


class NanGuard(TrainerCallback):
    """Stop training when a gradient or the logged loss turns NaN/inf, before the bad step is applied.

    Before each optimizer step it checks the gradients' total norm (one number). When it is not finite
    the gradients are dropped (so the optimizer skips the step), training stops, and neither a checkpoint
    nor an evaluation runs for that state. `.tripped` says whether it fired, `.message` why and what to do.
    With fp16, an overflowing step is normal (the GradScaler skips it and lowers its scale), so only
    `fp16_patience` overflows in a row trip the guard.
    """

    def __init__(self, fp16_patience: int = 5):
        self.fp16_patience = fp16_patience
        self.tripped = False
        self.message = ""
        self.step: int | None = None
        self._overflows = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.tripped, self.message, self.step, self._overflows = False, "", None, 0

    def on_pre_optimizer_step(self, args, state, control, model=None, lr_scheduler=None,
                              train_dataloader=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if self.tripped or not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self._overflows = 0
            return
        self._overflows += 1
        if args.fp16:
            if self._overflows < self.fp16_patience:
                return  # leave the inf gradients: the GradScaler sees them and skips this step
        else:
            for p in model.parameters():
                p.grad = None  # a parameter without a gradient is skipped by the optimizer
        step = state.global_step + 1  # the step being taken now
        lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else args.learning_rate
        self._trip(args, control, step, f"NaN/inf gradients at step {step} (learning rate {lr:.1e}); "
                   "the optimizer step was skipped, so the weights are those after the previous step.",
                   _batch_rows(args, train_dataloader, step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Second line of defence (the gradient check catches almost everything first). The Trainer
        # already replaces a NaN loss by the running mean (logging_nan_inf_filter), and with fp16 an
        # inf grad_norm is a skipped step, so only a non-finite value that got through counts.
        keys = ("loss",) if args.fp16 else ("loss", "grad_norm")
        bad = [k for k in keys if (logs or {}).get(k) is not None and not math.isfinite(logs[k])]
        if bad and not self.tripped:
            step = state.global_step
            self._trip(args, control, step, f"logged {' and '.join(bad)} is NaN/inf at step {step}; this "
                       "step was already applied, so resume from the last checkpoint before it.",
                       "the batches since the previous log")

    def on_step_end(self, args, state, control, **kwargs):
        self._block(control)  # runs after DefaultFlowCallback, which may have asked for a save

    def on_epoch_end(self, args, state, control, **kwargs):
        self._block(control)

    def _block(self, control) -> None:
        if self.tripped:
            control.should_training_stop = True
            control.should_save = False  # never checkpoint the bad state
            control.should_evaluate = False  # nor evaluate it (save_strategy="best" would save after)

    def _trip(self, args, control, step: int, what: str, rows: str) -> None:
        self.tripped, self.step = True, step
        self.message = (
            f"{what} Likely causes and fixes: "
            f"(1) learning rate too high: lower it (e.g. {args.learning_rate:.0e} -> {args.learning_rate / 4:.0e}) "
            "or add warmup; "
            "(2) fp16 overflow: train in bf16 (bf16=True) where the hardware supports it; "
            f"(3) a bad data row: check {rows} for empty, all-masked or extremely long examples."
        )
        self._block(control)


def _batch_rows(args, train_dataloader, step: int) -> str:
    """Which rows fed optimizer step `step` (1-based), as positions in that epoch's order."""
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    try:
        steps_per_epoch = max(math.ceil(len(train_dataloader) / args.gradient_accumulation_steps), 1)
    except TypeError:  # an IterableDataset has no length
        return f"the rows of step {step}'s batch ({per_step} rows per step)"
    epoch, index = divmod(step - 1, steps_per_epoch)
    first = index * per_step
    return (f"the rows of step {step}'s batch: positions {first}-{first + per_step - 1} of epoch {epoch}'s "
            f"shuffled order (seed={args.seed})")


class LivePlot(TrainerCallback):
    """One figure of train loss, eval loss and learning rate that redraws in place while training runs.

    The figure is rendered to PNG into one `ipywidgets.Image` (`.widget`), whose value is replaced on
    each redraw, so a notebook never accumulates figures. Put `.widget` in your own layout (an HBox beside
    a panel) before training, or let the callback display it when training starts in a notebook.
    Each redraw renders a PNG (~0.1-0.5 s on a CPU): raise `every` when logging_steps is small.
    In a terminal it only keeps `.history`. every: redraw every `every` log events.
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.history: list[dict] = []
        self.updates = 0  # redraws so far
        self.fig = None
        self._widget = None
        self._shown_by_us = False
        self._events = 0
        self.max_steps = None  # the run's planned steps, for the title

    @property
    def widget(self):
        if self._widget is None:
            import ipywidgets
            from matplotlib.figure import Figure  # not pyplot: no figure manager, nothing shown on its own

            self.fig = Figure(figsize=(6.4, 3.6), dpi=90)
            self._widget = ipywidgets.Image(format="png")
            self.redraw()
        return self._widget

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.history = []
        self.max_steps = state.max_steps or None
        # Show it unless the caller already placed .widget in a layout; if we showed it for an earlier
        # train() call, show it again in this cell (both views are the same widget).
        if _in_notebook() and (self._widget is None or self._shown_by_us):
            self._shown_by_us = True
            _show(self.widget)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.history.append({**(logs or {}), "step": state.global_step})
        self._events += 1
        if self._widget is not None and self._events % self.every == 0:
            self.redraw()

    def on_train_end(self, args, state, control, **kwargs):
        if self._widget is not None and self._events % self.every != 0:
            self.redraw()  # the last points, whatever `every` is

    def redraw(self) -> None:
        self.fig.clear()
        step = self.history[-1]["step"] if self.history else 0
        draw_curves(self.fig, self.history, f"step {step} of {self.max_steps}" if self.max_steps else None)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png")
        self._widget.value = buf.getvalue()
        self.updates += 1


def diagnose(history: list[dict], *, spike_factor: float = 2.0, window: int = 5) -> list[str]:
    """Recommendations read from the logged curves; an empty list when nothing looks wrong.

    history: MetricsLogger.history, LivePlot.history, trainer.state.log_history or the rows of metrics.jsonl.
    spike_factor, window: a loss more than `spike_factor` x the median of the `window` points before it is a spike.
    """
    if series(history, "reward")[0]:  # GRPO: its loss is ~0 by construction (group-mean baseline); the reward is the curve
        found = [_nonfinite(history), _reward_not_rising(history), _no_reward_signal(history)]
        return [f for f in found if f]
    steps, loss = series(history, "loss")
    masked = _all_masked(steps, loss, *series(history, "eval_loss"))
    if masked:
        return masked  # nothing else in these curves means anything
    train = [(s, v) for s, v in zip(steps, loss) if math.isfinite(v)]
    evals = [(s, v) for s, v in zip(*series(history, "eval_loss")) if math.isfinite(v)]
    found = [_nonfinite(history), _not_decreasing(train), _spikes(train, spike_factor, window),
             _overfitting(train, evals)]
    return [f for f in found if f]


def _all_masked(steps, loss, esteps, evals) -> list[str]:
    out = []
    # A batch whose labels are all -100 has loss 0/0 = NaN; the Trainer logs a NaN first loss as 0.0.
    if loss and all(v == 0 or not math.isfinite(v) for v in loss):
        out.append(f"train loss is {loss[0]:g} from the first step to step {steps[-1]}: every label is masked "
                   "(-100), so no token was trained. Check that the assistant answer survives truncation at "
                   "max_length and that the completion-only masking finds the answer.")
    if evals and all(not math.isfinite(v) for v in evals):
        out.append("eval loss is NaN at every evaluation: every label of the eval split is masked. Check the "
                   "eval rows' answers and their length against max_length.")
    return out


def _nonfinite(history) -> str | None:
    # A NaN/inf loss is always a problem; an inf grad_norm is one only if it is the last word
    # (fp16's GradScaler skips overflowing steps early in a healthy run).
    bad = [s for key in ("loss", "eval_loss") for s, v in zip(*series(history, key)) if not math.isfinite(v)]
    gsteps, gnorm = series(history, "grad_norm")
    if gnorm and not math.isfinite(gnorm[-1]):
        bad.append(next(s for s, v in zip(gsteps, gnorm) if not math.isfinite(v)))
    if not bad:
        return None
    step = min(bad)
    return (f"loss or gradients became NaN/inf at step {step}: lower the learning rate (or add warmup), "
            f"train in bf16 rather than fp16, and check the data rows of the batches around step {step}.")


def _quarter_medians(values) -> tuple[float, float] | None:
    """Medians of the first and last quarters (so one spike can't decide); None for fewer than 4 points."""
    if len(values) < 4:
        return None
    w = max(1, len(values) // 4)
    return statistics.median(values[:w]), statistics.median(values[-w:])


def _not_decreasing(train) -> str | None:
    ends = _quarter_medians([v for _, v in train])
    if ends is None:
        return None
    first, last = ends
    if last < first * 0.98:
        return None
    return (f"train loss did not go down ({first:.3f} at the start -> {last:.3f} at the end): raise the learning "
            "rate (LoRA usually wants 1e-4 to 3e-4) or train for more steps, and check that the labels are the "
            "answer tokens, not padding or the prompt.")


def _reward_not_rising(history) -> str | None:
    _, reward = series(history, "reward")
    ends = _quarter_medians([v for v in reward if math.isfinite(v)])
    if ends is None:
        return None
    first, last = ends
    if last > first:
        return None
    return (f"mean reward did not rise ({first:.3f} at the start -> {last:.3f} at the end; GRPO's loss stays "
            "near 0 whatever happens, so read the reward): train for more steps or raise the learning rate, and "
            "check that the reward functions can tell this policy's answers apart.")


def _no_reward_signal(history, limit: float = 0.8) -> str | None:
    _, zero = series(history, "frac_reward_zero_std")
    if not zero or statistics.fmean(zero) < limit:
        return None
    return (f"in {statistics.fmean(zero):.0%} of the groups every answer got the same reward, so their advantages "
            "are 0 and they teach nothing: raise temperature or num_generations for more varied answers, or change "
            "the starting policy (too weak: every reward 0; too strong: every answer right).")


def _spikes(train, factor: float, window: int) -> str | None:
    hits = []
    for i in range(3, len(train)):
        step, v = train[i]
        median = statistics.median(x for _, x in train[max(0, i - window):i])
        if v > factor * median and v > median + 0.1:  # below 0.1 nats a jump is noise, whatever the ratio
            hits.append((step, v, median))
    if not hits:
        return None
    step, v, median = max(hits, key=lambda h: h[1] / h[2])
    where = ", ".join(str(s) for s, _, _ in hits)
    return (f"loss spiked at step {where} (worst: {v:.3f} against a recent median of {median:.3f}): lower the "
            "learning rate or lengthen warmup, keep gradient clipping on (max_grad_norm=1.0), and check the rows "
            "of those batches for unusual data (very long, malformed, duplicated).")


def _overfitting(train, evals) -> str | None:
    if len(evals) < 3 or not train:
        return None
    best_step, best = min(evals, key=lambda p: p[1])
    last_step, last = evals[-1]
    before = [v for s, v in train if s <= best_step] or [train[0][1]]
    if last <= best * 1.02 or train[-1][1] >= before[-1]:
        return None
    return (f"eval loss was lowest at step {best_step} ({best:.3f}) and rose to {last:.3f} by step {last_step} "
            "while train loss kept falling: the model is overfitting. Stop near step "
            f"{best_step} (EarlyStoppingCallback with load_best_model_at_end=True), train fewer steps or "
            "epochs, or add more training data.")
