"""Loss curves: the series read from a history and the PNG drawn from it (synthetic history, no model)."""

import math

from ftlab.curves import LOSS_PLOT, save_loss_plot, series

HISTORY = [{"step": s, "loss": 2.0 * math.exp(-s / 20), "learning_rate": 2e-4 * (1 - s / 50)} for s in range(1, 50)] \
    + [{"step": s, "eval_loss": 1.5 - s / 100} for s in (10, 20, 30, 40)]


def test_series_picks_one_key_in_step_order():
    assert series(HISTORY, "eval_loss") == ([10, 20, 30, 40], [1.4, 1.3, 1.2, 1.1])
    assert series([{"step": 1, "loss": None}, {"step": 2, "loss": "0.5"}], "loss") == ([2], [0.5])


def test_save_loss_plot_writes_a_png(tmp_path):
    path = save_loss_plot(HISTORY, tmp_path / "run" / LOSS_PLOT)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
