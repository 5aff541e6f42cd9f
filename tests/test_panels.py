"""The notebook panels driven headlessly: set widget values, click buttons, check what reached ftlab."""

import json

import pytest
import torch

from ftlab import chat
from ftlab.config import TrainConfig
from ftlab.merge import disabled, use_adapter
from ftlab.panels import combination_panel, generation_panel, hyperparameter_panel
from ftlab.tasks import load_split

TARGETS = ["q_proj", "v_proj"]


def _text(output) -> str:
    return "".join(o.get("text", "") for o in output.outputs)


@pytest.fixture
def panel(tmp_path):
    cfg = TrainConfig(train_file="data/dates/train.jsonl", output_dir=str(tmp_path / "run"), save_steps=50)
    return hyperparameter_panel(cfg)


def test_config_follows_the_widgets(panel, tmp_path):
    c = panel.controls
    c["method"].value = "dora"
    c["r"].value = 4
    c["lora_alpha"].value = 8
    c["lora_dropout"].value = 0.1
    c["target_modules"].value = ("q_proj", "v_proj")
    c["learning_rate"].value = 1e-3
    c["max_steps"].value = 30
    c["per_device_train_batch_size"].value = 2
    c["max_length"].value = 128
    cfg = panel.config
    assert (cfg.method, cfg.r, cfg.lora_alpha, cfg.max_steps) == ("dora", 4, 8, 30)
    assert (cfg.per_device_train_batch_size, cfg.max_length) == (2, 128)
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.lora_dropout == pytest.approx(0.1)
    assert cfg.learning_rate == pytest.approx(1e-3, rel=1e-6)
    # fields the panel does not show come from the config it started with
    assert cfg.output_dir == str(tmp_path / "run") and cfg.save_steps == 50
    c["target_modules"].value = ("all-linear", "q_proj")  # all-linear wins over single names
    assert panel.config.target_modules == "all-linear"


def test_four_bit_checkbox_and_method_follow_each_other(panel):
    c = panel.controls
    c["load_in_4bit"].value = True
    assert c["method"].value == "qlora"
    c["method"].value = "lora"
    assert c["load_in_4bit"].value is False
    c["method"].value = "qlora"
    assert c["load_in_4bit"].value is True
    c["load_in_4bit"].value = False
    assert c["method"].value == "lora"


def test_set_from_code_adds_options_and_refuses_unknown_names(panel):
    panel.set(r=12, max_length=96, learning_rate=3e-4)
    assert (panel.config.r, panel.config.max_length) == (12, 96)
    with pytest.raises(KeyError, match="no 'num_train_epochs' widget"):
        panel.set(num_train_epochs=2)
    panel.base.num_train_epochs = 0  # a field the panel does not show...
    panel.set(max_steps=-1)  # ...and one it does: together they leave no steps to run
    with pytest.raises(ValueError, match="num_train_epochs"):  # TrainConfig's own validation, with the fix
        _ = panel.config


def test_estimate_button_shows_the_table_for_the_current_values(panel):
    panel.set(r=8, max_length=256, per_device_train_batch_size=4)
    panel.target.value = "T4"
    panel.estimate_button.click()
    est = panel.last_estimate
    assert est is not None and est.gpu == "T4" and est.settings.r == 8 and est.settings.per_device_train_batch_size == 4
    assert est.settings.optim == "adamw_8bit"  # what train() would pick on that GPU
    text = _text(panel.output)
    assert text.strip() == est.table() and "lora r=8" in text and "batch 4 x 256 tokens, on T4" in text
    small = est.total
    panel.set(per_device_train_batch_size=32)
    panel.estimate_button.click()
    assert panel.last_estimate.total > small and "batch 32 x 256" in _text(panel.output)


@pytest.mark.slow
def test_train_button_trains_with_the_panel_values_and_redraws_the_plot(tmp_path):
    rows = load_split("dates", "train")[:8]
    train_file = tmp_path / "tiny.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(train_file=str(train_file), output_dir=str(tmp_path / "run"), logging_steps=1,
                      save_steps=100, warmup_ratio=0.0)
    panel = hyperparameter_panel(cfg)
    panel.set(r=4, lora_alpha=8, learning_rate=1e-3, max_steps=3, per_device_train_batch_size=2,
              max_length=128, target_modules=TARGETS)
    before = panel.plot.updates
    panel.train_button.click()
    result = panel.result
    assert result is not None, _text(panel.output)
    assert result.config.r == 4 and result.config.max_steps == 3 and result.config.target_modules == TARGETS
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert [h["step"] for h in result.history if "loss" in h] == [1, 2, 3]
    assert all(0 < v < 10 for v in losses), losses
    assert result.metrics["trainable_params"] == result.model.get_nb_trainable_parameters()[0]
    # the panel's own LivePlot was the callback: redrawn on every log event, in the widget beside the controls
    assert panel.plot.updates - before >= 3 and panel.plot.widget.value[:4] == b"\x89PNG"
    assert panel.plot.widget in panel.widget.children[0].children
    # the button's run trains without transformers' progress bar (from a widget callback it stops redrawing)
    handler = [type(c).__name__ for c in result.trainer.callback_handler.callbacks]
    assert "ProgressCallback" not in handler and "NotebookProgressCallback" not in handler, handler
    assert panel.plot.max_steps == 3  # the plot title counts "step k of 3"


def _two_adapter_model(make_adapter):
    # random A and B, scaled up (alpha/r = 8) so each adapter changes the answers
    model, tok = make_adapter(target_modules=TARGETS, r=4, lora_alpha=32, names=("dates", "numbers"))
    return model.eval(), tok


def test_generation_panel_answers_side_by_side_and_restores_the_adapter(make_adapter):
    model, tok = _two_adapter_model(make_adapter)
    model.set_adapter("numbers")
    panel = generation_panel({"base": (model, tok, False), "dates adapter": (model, tok, "dates")},
                             max_new_tokens=8)
    panel.prompt.value = "What is the capital of France?"
    panel.button.click()
    with disabled(model):
        base = chat(model, tok, "What is the capital of France?", max_new_tokens=8)
    dates = chat(use_adapter(model, "dates"), tok, "What is the capital of France?", max_new_tokens=8)
    assert panel.answers == {"base": base, "dates adapter": dates} and base != dates
    assert base.split()[0] in panel.boxes["base"].value
    model.set_adapter("numbers")
    panel.generate("Say hi")
    assert model.active_adapter == "numbers"  # the panel left the model as it found it


@pytest.mark.slow
def test_combination_panel_combines_with_the_slider_weights_and_reevaluates(make_adapter):
    model, tok = _two_adapter_model(make_adapter)
    tasks = {"dates": load_split("dates", "test")[:2], "numbers": load_split("numbers", "test")[:2]}
    panel = combination_panel(model, tok, ["dates", "numbers"], tasks)
    panel.weights[0].value, panel.weights[1].value = 0.5, 1.5
    panel.kind.value = "cat"
    panel.button.click()
    assert list(panel.table.index) == ["base", "dates", "numbers", "combined"]
    assert list(panel.table.columns) == ["dates", "numbers"] and panel.table.notna().all().all()
    assert "combined = cat(0.5 x dates, 1.5 x numbers)" in _text(panel.output)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    # 'cat' is exact: the combined update is the weighted sum of the two updates
    expected = 0.5 * layer.get_delta_weight("dates") + 1.5 * layer.get_delta_weight("numbers")
    torch.testing.assert_close(layer.get_delta_weight("combined"), expected)
    panel.combine(weights=[1.0, 0.0], combination_type="linear")  # again: the old combination is replaced
    torch.testing.assert_close(layer.get_delta_weight("combined"), layer.get_delta_weight("dates"))
    assert model.active_adapter == "combined" and set(model.peft_config) == {"dates", "numbers", "combined"}
    assert "combined = linear(1 x dates, 0 x numbers)" in _text(panel.output)
