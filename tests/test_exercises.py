"""ftlab.exercises: every check passes the solution written in the notebook sources, and fails the stub the
learner starts from and the mistakes a learner makes (each named in its test)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ftlab import exercises

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
spec = importlib.util.spec_from_file_location("build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
SOURCES = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py"))


def _cells(src, tag):
    return [text for kind, tags, text in build.raw_cells(src.read_text()) if kind == "code" and tag in tags]


def _run_check(namespace, check_cell):
    """Run a check cell as the notebook does; its last line is the check_...() call: return its result."""
    *head, call = check_cell.splitlines()
    exec("\n".join(head), namespace)  # noqa: S102 - the course's own cells
    return eval(call, namespace)


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_each_notebook_has_a_checked_exercise_whose_solution_passes_and_stub_fails(src):
    solution, stub, checks = _cells(src, "solution"), _cells(src, "exercise"), _cells(src, "check")
    assert solution and stub and checks, f"{src.name}: needs cells tagged exercise, solution and check"
    assert any("ftlab.exercises" in c for c in checks), f"{src.name}: its check does not use ftlab.exercises"
    solved = {}
    for cell in solution:
        exec(cell, solved)  # noqa: S102
    for check in checks:
        result = _run_check(solved, check)
        assert isinstance(result, exercises.Check) and result.passed, result
        assert repr(result).startswith("passed")
    started = {}
    for cell in stub:
        exec(cell, started)  # noqa: S102
    for check in checks:
        result = _run_check(started, check)
        assert not result.passed and "returned None" in result.detail, result
        assert repr(result).startswith("not yet")


def test_learner_notebooks_hold_no_solution_and_the_solutions_notebook_asserts_every_check():
    for src in SOURCES:
        nb = build.parse(src.read_text(), src.stem + ".ipynb")
        assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells), src.name
        assert any("check" in c.metadata.get("tags", []) for c in nb.cells), src.name
    solutions = build.solutions(SOURCES)
    checks = [c.source for c in solutions.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == sum(len(_cells(s, "check")) for s in SOURCES)
    assert all(c.rstrip().endswith('assert result, "this solution fails its own check"') for c in checks)
    for src in SOURCES:
        assert f"[{src.stem}]({src.stem}.ipynb)" in "\n".join(c.source for c in solutions.cells)


# --- each check against mistakes ---------------------------------------------------------------------------

def test_day_number_rejects_an_off_by_one_and_case_blindness():
    words = list(exercises._ordinal_days())
    assert not exercises.check_day_number(lambda w: words.index(w.lower()) if w.lower() in words else 0)
    ordinal = exercises._ordinal_days()
    assert not exercises.check_day_number(lambda w: ordinal[w])  # "Twenty First" has a space and capitals


def test_alpaca_check_rejects_a_dropped_input_and_a_dropped_system_prompt():
    def no_input(row):
        return [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["output"]}]

    def no_system(row):
        user = row["instruction"] + ("\n\n" + row["input"] if (row.get("input") or "").strip() else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]

    assert "the library gives" in exercises.check_alpaca_to_messages(no_input).detail
    assert not exercises.check_alpaca_to_messages(no_system)


def test_rslora_check_names_plain_loras_scale():
    result = exercises.check_rslora_forward(lambda x, W, A, B, alpha, r: x @ W.T + alpha / r * (x @ A.T @ B.T))
    assert not result and "plain LoRA" in result.detail
    assert not exercises.check_rslora_forward(lambda x, W, A, B, alpha, r: x @ W.T)  # no update at all
    assert "expected (3, 16)" in exercises.check_rslora_forward(lambda x, W, A, B, alpha, r: (x @ W.T).T).detail
    assert "raised RuntimeError" in exercises.check_rslora_forward(lambda x, W, A, B, alpha, r: x @ W).detail


def _uniform(w, block, n_levels=16, per_tensor=False):
    blocks = w.flatten().reshape(-1, block)
    absmax = w.abs().max() if per_tensor else blocks.abs().amax(dim=1, keepdim=True)
    levels = torch.linspace(-1, 1, n_levels)
    return (levels[(blocks / absmax).unsqueeze(-1).sub(levels).abs().argmin(-1)] * absmax).reshape(w.shape)


def test_uniform_check_rejects_other_grids_and_reports_nf4():
    assert exercises.check_uniform_4bit(lambda w, block: _uniform(w, block))
    assert "NF4 (bitsandbytes)" in exercises.check_uniform_4bit(lambda w, block: _uniform(w, block)).detail
    assert "distinct values: 4 bits give 16" in exercises.check_uniform_4bit(lambda w, block: _uniform(w, block, 32)).detail
    assert not exercises.check_uniform_4bit(lambda w, block: _uniform(w, block, 15))
    assert not exercises.check_uniform_4bit(lambda w, block: _uniform(w, block, per_tensor=True))
    assert not exercises.check_uniform_4bit(lambda w, block: w)  # no rounding: too many values per block


def test_linear_merge_check_rejects_the_weighted_sum_of_updates():
    def weighted_sum(As, Bs, weights, scalings):
        return sum(w * s * B @ A for A, B, w, s in zip(As, Bs, weights, scalings))

    result = exercises.check_linear_merge(weighted_sum)
    assert not result and "'cat'" in result.detail

    def solution(As, Bs, weights, scalings):
        roots = [math.sqrt(w * s) for w, s in zip(weights, scalings)]
        return sum(c * B for c, B in zip(roots, Bs)) @ sum(c * A for c, A in zip(roots, As))

    passed = exercises.check_linear_merge(solution)
    assert passed and "cross terms" in passed.detail


def test_iso_shape_check_rejects_a_reading_without_normalize_and_one_that_checks_the_calendar():
    import datetime
    import re

    assert not exercises.check_iso_shape(lambda a: re.fullmatch(r"\d{4}-\d{2}-\d{2}", a.strip()) is not None)

    def calendar(a):
        try:
            datetime.date.fromisoformat(a.strip().rstrip("."))
        except ValueError:
            return False
        return True

    assert not exercises.check_iso_shape(calendar)  # "2021-02-30" is shaped right; 20210303 is not


def _dpo(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def test_dpo_check_on_fixed_values_rejects_a_missing_beta_a_flipped_sign_and_no_mean():
    assert exercises.check_dpo_loss(_dpo)
    assert not exercises.check_dpo_loss(lambda pc, pr, rc, rr, beta: -F.logsigmoid((pc - rc) - (pr - rr)).mean())
    assert not exercises.check_dpo_loss(lambda pc, pr, rc, rr, beta: _dpo(pr, pc, rr, rc, beta))
    many = exercises.check_dpo_loss(lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pc - rc) - (pr - rr))))
    assert "average" in many.detail


def test_dpo_check_against_a_log_made_as_trl_makes_it():
    """A log row built as TRL's DPOTrainer builds it from four pairs: batch means of the log-probabilities
    and rewards, and the mean per-pair loss; step 1 with the policy equal to the reference."""
    beta, g = 0.1, torch.Generator().manual_seed(0)
    history = [{"step": 1, "loss": math.log(2), "rewards/chosen": 0.0, "rewards/rejected": 0.0,
                "logps/chosen": -12.0, "logps/rejected": -15.0}]
    for step in (2, 3):
        pc, pr, rc, rr = (-torch.rand(4, generator=g) * 20 for _ in range(4))
        pc = rc + 5 + torch.rand(4, generator=g) * 10  # the policy learned to prefer chosen
        history.append({"step": step, "loss": _dpo(pc, pr, rc, rr, beta).item(),
                        "rewards/chosen": (beta * (pc - rc)).mean().item(),
                        "rewards/rejected": (beta * (pr - rr)).mean().item(),
                        "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()})
    result = exercises.check_dpo_loss(_dpo, history=history, beta=beta)
    assert result and "TRL 0.6931, yours 0.6931" in result.detail
    # a log whose loss is below what the logged margins allow (0.5 < log 2 at margin 0) fails the check
    bad = exercises.check_dpo_loss(_dpo, history=[dict(history[0], loss=0.5)], beta=beta)
    assert not bad and "above TRL's logged loss 0.5000" in bad.detail


def test_ia3_check_rejects_counting_outputs_everywhere():
    def outputs_only(model, targets, feedforward):
        return sum(m.out_features for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in targets)

    result = exercises.check_ia3_parameters(outputs_only)
    assert not result and "feed-forward ['down_proj']" in result.detail


def test_steps_per_epoch_check_rejects_floors_and_one_process():
    assert not exercises.check_steps_per_epoch(lambda n, b, g, p: n // (b * g * p))
    assert not exercises.check_steps_per_epoch(lambda n, b, g, p: math.ceil(n / (b * g)))
    assert exercises.check_steps_per_epoch(lambda n, b, g, p: math.ceil(math.ceil(math.ceil(n / p) / b) / g))
    # the counting itself: 100 rows, 2 processes (50 each), batches of 3 (17), 2 per step: 9 steps
    assert exercises._steps_by_counting(100, 3, 2, 2) == 9


def test_reward_check_names_wrong_lengths_and_wrong_values():
    fixed, answer = ["2021-03-03", "2020-01-01"], ["2021-03-03"] * 2
    short = exercises.check_reward(lambda completions, answer, **kw: [1.0], fixed, answer, [1.0, 0.0])
    assert not short and "returned 1 scores for 2 completions" in short.detail
    wrong = exercises.check_reward(lambda completions, answer, **kw: [1.0, 1.0], fixed, answer, [1.0, 0.0])
    assert not wrong and "'2020-01-01' -> 1.0 (want 0.0)" in wrong.detail
