"""Loss curves of a run: read a log history (`series`) and draw it (`draw_curves`, `save_loss_plot`);
a GRPO run's reward curves (`draw_rewards`) go beside its loss.

One idea used by three readers: the live plot during training (monitor.LivePlot), the PNG in the run
folder (training writes loss_curve.png) and the report that links it (report.write_report).
Leaves out: judging the curves (monitor.diagnose).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

LOSS_PLOT = "loss_curve.png"  # the PNG's name in a run folder; write_report links it when present


def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in a history (MetricsLogger rows or trainer.state.log_history)."""
    points = [(row["step"], float(row[key])) for row in history if row.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def reward_keys(history: list[dict]) -> list[str]:
    """The per-function mean rewards GRPO logged (rewards/<name>/mean), in first-seen order."""
    return list(dict.fromkeys(k for row in history for k in row
                              if k.startswith("rewards/") and k.endswith("/mean")))


def draw_curves(fig, history: list[dict], title: str | None = None) -> None:
    """Train loss and eval loss against step on `fig`, the learning rate on a twin axis; when the history
    holds GRPO rewards, a second panel beside it with each reward function's mean per step."""
    rewards = reward_keys(history)
    ax = fig.add_subplot(1, 2, 1) if rewards else fig.add_subplot()
    if rewards:
        draw_rewards(fig.add_subplot(1, 2, 2), history, rewards)
    if title:
        ax.set_title(title, fontsize=10)
    handles = []
    for key, style, label in (("loss", "-", "train loss"), ("eval_loss", "o-", "eval loss")):
        steps, values = series(history, key)
        if steps:
            handles += ax.plot(steps, values, style, label=label, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    steps, lrs = series(history, "learning_rate")
    if steps:
        lr_ax = ax.twinx()
        handles += lr_ax.plot(steps, lrs, "--", color="tab:gray", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "waiting for the first log", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()


def draw_rewards(ax, history: list[dict], keys: list[str]) -> None:
    """Mean reward per reward function against step (each in 0..1 for the shipped functions)."""
    for key in keys:
        ax.plot(*series(history, key), "-", label=key.removeprefix("rewards/").removesuffix("/mean"))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward of the sampled answers")
    ax.legend(loc="lower right", fontsize="small")


def save_loss_plot(history: list[dict], path) -> Path:
    """Write the loss / learning-rate curves of `history` to a PNG at `path`."""
    path = Path(path)
    fig = Figure(figsize=(12, 4) if reward_keys(history) else (7, 4), dpi=100)  # a bare Figure renders with Agg: no display, no pyplot state
    draw_curves(fig, history)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
