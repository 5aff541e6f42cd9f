"""Notebook panels: widgets over ftlab's functions, each action also a plain method you can call in a cell.

  hyperparameter_panel(config)   method, rank, alpha, ..., 4-bit beside a live loss plot; Estimate and Train
  generation_panel(models)       one prompt, every model's greedy answer side by side
  combination_panel(model, ...)  weights of two adapters and a combination type; combine and re-evaluate

A button only calls the panel's method (`panel.estimate()`, `panel.train()`, `panel.generate()`,
`panel.combine()`), so a notebook can run the same step as code and tests can drive the widgets headlessly
(`widget.value = ...`, `button.click()`). Display a panel with `display(panel)` or by ending a cell with it.
Leaves out: anything not already in ftlab (the panels compute nothing themselves) and saving widget state.
"""

from __future__ import annotations

import dataclasses
import html

import ipywidgets as W
import torch

from ftlab.config import METHODS, TrainConfig, config_from_dict, default_optim, resolve
from ftlab.estimation import GPUS, estimate
from ftlab.monitor import LivePlot

LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Llama-style
PANEL_FIELDS = ("method", "r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "max_steps",
                "per_device_train_batch_size", "max_length")  # the TrainConfig fields the panel edits
LABEL = W.Layout(width="330px")
STYLE = {"description_width": "150px"}


def _choices(options, value):
    """Dropdown options that include `value`, sorted, so a config's own value is always selectable."""
    return sorted(set(options) | {value})


def _estimate_target() -> str:
    """The estimate's name for this machine: 'cpu', or the GPUS entry named in the CUDA device's name."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).upper()
    if "A100" in name:  # two entries: tell them apart by memory
        return "A100-80" if torch.cuda.get_device_properties(0).total_memory > 50e9 else "A100-40"
    return next((gpu for gpu in GPUS if gpu in name), "T4")  # an unlisted GPU: the smallest one listed


class HyperparameterPanel:
    """Widgets for a TrainConfig's main fields, a LivePlot beside them, and Estimate / Train buttons.

    `.config`: the TrainConfig of the current values (validated). `.estimate()`, `.train()`: what the
    buttons call. `.result`: the TrainResult of the last `.train()`. `.plot`: the LivePlot callback.
    """

    def __init__(self, config: TrainConfig | None = None):
        self.base = config or TrainConfig(train_file=_dates_file("train"), output_dir="runs/panel")
        c = self.base
        self.result = None
        self.last_estimate = None
        self.plot = LivePlot()
        batch = c.per_device_train_batch_size
        self.controls = {  # named as the TrainConfig fields they set (but load_in_4bit: see below)
            "method": W.Dropdown(options=list(METHODS), value=c.method),
            "r": W.Dropdown(options=_choices([1, 2, 4, 8, 16, 32, 64, 128], c.r), value=c.r),
            "lora_alpha": W.BoundedIntText(value=c.lora_alpha, min=1, max=1024),
            "lora_dropout": W.FloatSlider(value=c.lora_dropout, min=0.0, max=0.5, step=0.01),
            "target_modules": W.SelectMultiple(options=["all-linear", *LINEAR_LAYERS], rows=4,
                                               value=_targets_value(c.target_modules)),
            "learning_rate": W.FloatLogSlider(value=c.learning_rate, base=10, min=-6, max=-2, step=0.1,
                                              readout_format=".1e"),
            "max_steps": W.BoundedIntText(value=c.max_steps, min=-1, max=100_000),
            "per_device_train_batch_size": W.Dropdown(options=_choices([1, 2, 4, 8, 16, 32], batch),
                                                      value=batch),
            "max_length": W.Dropdown(options=_choices([64, 128, 256, 512, 1024, 2048, 4096], c.max_length),
                                     value=c.max_length),
            "load_in_4bit": W.Checkbox(value=c.method == "qlora"),
        }
        labels = {"r": "r (rank)", "per_device_train_batch_size": "batch size",
                  "load_in_4bit": "4-bit base (QLoRA)"}
        for name, w in self.controls.items():
            w.description, w.layout, w.style = labels.get(name, name), LABEL, STYLE
        # 4-bit is not a separate field: a 4-bit base means method=qlora, so the two widgets follow each other
        self.controls["method"].observe(self._method_changed, names="value")
        self.controls["load_in_4bit"].observe(self._four_bit_changed, names="value")
        self.target = W.Dropdown(options=["cpu", *GPUS], value=_estimate_target(), description="estimate for")
        self.target.layout, self.target.style = LABEL, STYLE
        self.estimate_button = W.Button(description="Estimate", icon="calculator")
        self.train_button = W.Button(description="Train", icon="play", button_style="primary")
        self.estimate_button.on_click(lambda _: self._run(self.estimate))
        self.train_button.on_click(lambda _: self._run(lambda: self.train(progress_bar=False)))
        self.output = W.Output(layout=W.Layout(max_height="320px", overflow="auto"))
        buttons = W.HBox([self.estimate_button, self.train_button])
        left = W.VBox([*self.controls.values(), self.target, buttons])
        self.widget = W.VBox([W.HBox([left, self.plot.widget]), self.output])

    def _method_changed(self, change):
        self.controls["load_in_4bit"].value = change["new"] == "qlora"

    def _four_bit_changed(self, change):
        method = self.controls["method"]
        if change["new"] and method.value != "qlora":
            method.value = "qlora"  # LoRA on the 4-bit base; the other methods train 16/32-bit weights
        elif not change["new"] and method.value == "qlora":
            method.value = "lora"

    def values(self) -> dict:
        """The widgets' values under TrainConfig's names."""
        out = {k: self.controls[k].value for k in PANEL_FIELDS}
        targets = list(out["target_modules"])
        out["target_modules"] = "all-linear" if not targets or "all-linear" in targets else targets
        return out

    def set(self, **values) -> HyperparameterPanel:
        """Set widgets from code: panel.set(learning_rate=1e-3, max_steps=30). Unknown names raise."""
        for key, value in values.items():
            if key not in self.controls:
                raise KeyError(f"the panel has no {key!r} widget; it has {', '.join(self.controls)}. Fix: "
                               "set other fields on the config you pass to hyperparameter_panel(config).")
            if key == "target_modules":
                value = _targets_value(value)
            w = self.controls[key]
            if isinstance(w, W.Dropdown) and value not in w.options:
                w.options = _choices(w.options, value)
            w.value = value
        return self

    @property
    def config(self) -> TrainConfig:
        """The TrainConfig of the current values; every other field from the config the panel started with."""
        return config_from_dict({**dataclasses.asdict(self.base), **self.values()})

    def estimate(self, gpu: str | None = None):
        """ftlab.estimation for the current values on `gpu` (default: the 'estimate for' widget); shows it."""
        cfg = resolve(self.config)  # gradient checkpointing as train() decides it
        target = gpu or self.target.value
        optim = self.config.optim or default_optim(on_gpu=target != "cpu")  # what training would pick there
        self.last_estimate = estimate(
            cfg.model, method=cfg.method, max_length=cfg.max_length,
            per_device_train_batch_size=cfg.per_device_train_batch_size, gpu=target, r=cfg.r, target_modules=cfg.target_modules, optim=optim,
            gradient_checkpointing=cfg.gradient_checkpointing, num_virtual_tokens=cfg.num_virtual_tokens)
        _write(self.output, self.last_estimate.table())
        return self.last_estimate

    def train(self, progress_bar: bool = True, **overrides):
        """ftlab.training.train with the current values (after `set(**overrides)`), the live plot as callback.

        The Train button passes progress_bar=False: the live plot's title counts the steps instead."""
        from ftlab.report import accuracy_line
        from ftlab.training import train

        self.set(**overrides)
        cfg = self.config
        self.result = train(cfg, callbacks=[self.plot], progress_bar=progress_bar)
        m = self.result.metrics
        score = accuracy_line(m)
        print(f"panel: trained {m['steps']} steps in {m['train_time_s']:.0f} s; run folder {self.result.run_dir}"
              + (f"\n{score}" if score else ""))
        return self.result

    def _run(self, action):
        # A button's errors would otherwise go to the kernel log; inside the Output they show under the panel.
        # The Output also catches what train() prints (the precision line, the closing summary).
        self.output.outputs = ()
        with self.output:
            action()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def hyperparameter_panel(config: TrainConfig | None = None) -> HyperparameterPanel:
    """Widgets for `config`'s method, LoRA and training settings beside a LivePlot; Estimate, Train buttons.

    config: the starting values and every field the panel does not show (train_file, output_dir, ...);
        default: LoRA on data/dates/train.jsonl into runs/panel.
    """
    return HyperparameterPanel(config)


def _write(output: W.Output, text: str) -> None:
    """Replace what `output` shows by `text`; works without a kernel too (tests read `output.outputs`)."""
    output.outputs = ()
    output.append_stdout(text + "\n")


def _dates_file(split: str) -> str:
    from ftlab.tasks import DATA_DIR

    return str(DATA_DIR / "dates" / f"{split}.jsonl")


def _targets_value(target_modules) -> tuple[str, ...]:
    if isinstance(target_modules, str):
        return (target_modules,)
    unknown = [t for t in target_modules if t not in LINEAR_LAYERS]
    if unknown:
        raise ValueError(f"target_modules {unknown}: the panel offers all-linear and "
                         f"{', '.join(LINEAR_LAYERS)}. Fix: pick from those, or set target_modules on a "
                         "TrainConfig and call ftlab.training.train on it.")
    return tuple(target_modules)


# ---------------------------------------------------------------- generation side by side


class GenerationPanel:
    """A prompt box and a button; `.generate(prompt)` answers with every model, one column per model.

    `.answers`: {name: answer} of the last generate().
    """

    def __init__(self, models: dict, max_new_tokens: int = 48):
        self.models, self.max_new_tokens, self.answers = models, max_new_tokens, {}
        self.prompt = W.Textarea(value="Rewrite this date as YYYY-MM-DD.\nDate: the 3rd of March, 2021",
                                 layout=W.Layout(width="600px", height="70px"))
        self.button = W.Button(description="Generate", icon="play", button_style="primary")
        self.button.on_click(lambda _: self.generate())
        width = f"{max(160, 900 // len(models))}px"
        self.boxes = {name: W.HTML(layout=W.Layout(width=width, border="1px solid #ccc", padding="4px"))
                      for name in models}
        self.widget = W.VBox([W.HBox([self.prompt, self.button]), W.HBox(list(self.boxes.values()))])
        self._show({name: "" for name in models})

    def generate(self, prompt: str | None = None) -> dict:
        """Greedy answers of every model to `prompt` (default: the prompt box's text), as {name: answer}."""
        from ftlab.generate import chat
        from ftlab.merge import answering_as

        if prompt is not None:
            self.prompt.value = prompt
        self.answers = {}
        for name, (model, tok, *adapter) in self.models.items():
            with answering_as(model, adapter[0] if adapter else None):
                self.answers[name] = chat(model, tok, self.prompt.value, max_new_tokens=self.max_new_tokens)
        self._show(self.answers)
        return self.answers

    def _show(self, answers: dict) -> None:
        for name, text in answers.items():
            self.boxes[name].value = (f"<b>{html.escape(name)}</b><pre style='white-space:pre-wrap'>"
                                      f"{html.escape(text)}</pre>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def generation_panel(models: dict, max_new_tokens: int = 48) -> GenerationPanel:
    """One prompt box, a Generate button, and each model's greedy answer in its own column.

    models: {name: (model, tokenizer)}, or {name: (peft_model, tokenizer, adapter)} where adapter is the
        name of a loaded adapter, or False for the base with every adapter off. Several entries may share
        one PeftModel; its active adapter is restored after each answer.
    """
    return GenerationPanel(models, max_new_tokens)


# ---------------------------------------------------------------- combining two adapters


COMBINATION_TYPES = ("cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")


class CombinationPanel:
    """Two weight sliders and a combination type; `.combine()` builds the combined adapter and re-evaluates.

    `.table`: exact match of the base, each adapter and the combination (rows) on every task (columns).
    """

    def __init__(self, model, tokenizer, adapters: list[str], tasks: dict, name: str = "combined",
                 max_new_tokens: int = 16):
        if len(adapters) != 2:
            raise ValueError(f"combination_panel combines two adapters, got {adapters}. Fix: pass the names "
                             "of two adapters loaded in the model (ftlab.merge.load_adapters).")
        self.model, self.tokenizer, self.tasks, self.name = model, tokenizer, tasks, name
        self.adapters, self.max_new_tokens = list(adapters), max_new_tokens
        self.table = None  # the last combination's table; its base and single-adapter rows are reused
        self.weights = [W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description=f"weight {a}",
                                      layout=LABEL, style=STYLE) for a in self.adapters]
        self.kind = W.Dropdown(options=list(COMBINATION_TYPES), value="cat", description="combination_type",
                               layout=LABEL, style=STYLE)
        self.density = W.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05, description="density",
                                     layout=LABEL, style=STYLE)
        self.button = W.Button(description="Combine and evaluate", icon="play", button_style="primary",
                               layout=W.Layout(width="220px"))
        self.button.on_click(lambda _: self._run())
        self.output = W.Output()
        self.widget = W.HBox([W.VBox([*self.weights, self.kind, self.density, self.button]), self.output])

    def combine(self, weights: list[float] | None = None, combination_type: str | None = None,
                density: float | None = None):
        """evaluation.combination_table with the sliders' values (or these): exact match per task."""
        from ftlab.evaluation import combination_table
        from ftlab.merge import DENSITY_TYPES

        for slider, w in zip(self.weights, weights or []):
            slider.value = w
        if combination_type is not None:
            self.kind.value = combination_type
        if density is not None:
            self.density.value = density
        kind = self.kind.value
        self.table = combination_table(self.model, self.tokenizer, self.adapters, self.tasks,
                                       weights=[s.value for s in self.weights], combination_type=kind,
                                       density=self.density.value if kind in DENSITY_TYPES else None,
                                       name=self.name, max_new_tokens=self.max_new_tokens, singles=self.table)
        recipe = ", ".join(f"{s.value:g} x {a}" for s, a in zip(self.weights, self.adapters))
        recipe += f", density {self.density.value:g}" if kind in DENSITY_TYPES else ""
        _write(self.output, f"{self.name} = {kind}({recipe}): exact match\n"
                            + self.table.to_string(float_format=lambda v: f"{v:.0%}"))
        return self.table

    def _run(self):
        with self.output:  # in a notebook a button's error shows here, under the panel, not in the kernel log
            self.combine()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def combination_panel(model, tokenizer, adapters: list[str], tasks: dict, name: str = "combined",
                      max_new_tokens: int = 16) -> CombinationPanel:
    """Sliders for two adapters' weights, a combination type, and a button that combines and re-evaluates.

    model: a PeftModel holding both `adapters` (ftlab.merge.load_adapters). tasks: {task name: chat rows}.
    max_new_tokens: 16 covers the course's answers (a date, a number); longer replies are wrong anyway.
    """
    return CombinationPanel(model, tokenizer, adapters, tasks, name, max_new_tokens)
