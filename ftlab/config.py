"""One fine-tuning run as a dataclass: `TrainConfig`, read from YAML with `key=value` overrides.

Field names are TRL's and transformers' (`learning_rate`, `per_device_train_batch_size`, ...) so what a
learner writes here carries over to `trl sft`, axolotl and Unsloth notebooks. Each field's comment says
the trade-off. `load_config` checks names, types and combinations up front, so a typo fails in a
second with the fix, not ten minutes into training. `resolve` fills the automatic choices (None / "auto")
for this machine. Leaves out: building anything from the config (see `adapters.py` and `training.py`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftlab.embedded import DEFAULT_MODEL
from ftlab.shipped import config_names, config_path

METHODS = ("full", "lora", "rslora", "dora", "qlora", "ia3", "prefix", "prompt", "adapter")
ADAPTER_PLACEMENTS = ("houlsby", "pfeiffer")  # method=adapter: after attention and MLP, or after the MLP only
UNSLOTH_METHODS = ("lora", "rslora", "qlora")  # the methods Unsloth's get_peft_model builds
TASKS = ("sft", "cpt", "dpo", "kto", "orpo", "grpo")
PREFERENCE_TASKS = ("dpo", "kto", "orpo")  # trained on prompt/chosen/rejected pairs
BACKENDS = ("auto", "unsloth", "transformers")
REPORT_TO = ("none", "tensorboard")
RECORD_KEY = "versions"  # written by save_config for the record (library versions); not a setting
FILE_KEYS = ("train_file", "eval_file", "test_file", "unseen_test_file", "init_adapter")  # inputs: a relative path in a YAML file is looked up
#   beside that file first, then in the working directory (an override typed on a command line: the reverse)


@dataclass
class TrainConfig:
    # --- what to train, on what, where to write it
    model: str = DEFAULT_MODEL  # hub id or local folder; the embedded SmolLM2-135M works offline
    train_file: str | None = None  # JSONL: chats, prompt/completion, or prompt/chosen/rejected (grpo: chats or
    #   prompt/completion; the final answer is not imitated, it is the reference the rewards compare with)
    eval_file: str | None = None  # validation JSONL: eval loss every eval_steps, needed for early stopping
    test_file: str | None = None  # held-out JSONL: base vs tuned exact match (costs generation)
    test_limit: int | None = None  # score the first N test rows; None: all. Fewer: faster, noisier
    unseen_test_file: str | None = None  # a second test split worded unlike the training rows: its base vs tuned
    #   exact match too (test_limit rows), so the report shows whether the model learned the task or the template
    benchmark_tasks: list[str] | None = None  # lm-eval tasks (data/lm_eval/) for base and tuned in the report
    benchmark_limit: int | None = None  # first N documents per benchmark task; None: all
    output_dir: str = "runs/run"  # the run folder: adapter, tokenizer, checkpoints, metrics, report
    task: str = "sft"  # "sft": imitate answers; "cpt": continued pretraining on raw text (.txt or {"text"} rows,
    #   loss on every token, always packed to max_length); "dpo": prefer chosen over rejected answers; "kto": the same
    #   pairs as answers marked good or bad (no pairing needed); "orpo": SFT on chosen plus an odds-ratio
    #   penalty on rejected, in one stage with no reference model; "grpo": sample answers, score them with
    #   reward_funcs, reinforce the better ones of each group (TRL's GRPOTrainer)
    init_adapter: str | None = None  # an adapter run folder to start from, merged into the base weights first:
    #   the adapter-off model (the report's "before", and the DPO/GRPO reference) is then that starting policy
    warm_start_steps: int = 0  # grpo: first this many SFT steps on train_file's answers (run folder
    #   output_dir/warm_start, then as init_adapter). 0: none; the base model's answers then need rewards it can earn
    # --- method: which weights train
    method: str = "lora"  # full | lora | rslora | dora | qlora | ia3 | prefix | prompt | adapter (bottleneck)
    r: int = 16  # LoRA rank (method=adapter: the bottleneck size): higher = more capacity, parameters, memory
    adapter_placement: str = "houlsby"  # method=adapter: houlsby (after attention and MLP) | pfeiffer (MLP only)
    lora_alpha: int = 32  # LoRA scale is alpha/r (alpha/sqrt(r) for rslora); higher = bigger updates
    lora_dropout: float = 0.0  # regularizes small data; PEFT's and Unsloth's default 0 (on CPU its random
    #   numbers cost ~25% of a LoRA step: benchmarks/train_throughput.py --lora-dropout 0.05)
    target_modules: str | list[str] = "all-linear"  # all-linear (best) or names: [q_proj, v_proj]
    num_virtual_tokens: int = 20  # prefix/prompt: more = more capacity, longer inputs
    backend: str = "auto"  # auto | unsloth (CUDA only, faster) | transformers (PEFT, runs anywhere)
    beta: float | None = None  # KL pull toward the reference: higher stays closer, lower follows the signal harder.
    #   None: TRL's default for the task: DPO and KTO 0.1; ORPO 0.1 (there the weight of the odds-ratio term,
    #   the paper's lambda); GRPO 0.0 (no KL term, and no reference log-probs computed)
    # --- grpo: reinforcement learning with verifiable rewards (TRL's GRPOConfig names)
    reward_funcs: list[str] | None = None  # ftlab.rewards names, e.g. [exact_date, date_fields]; summed.
    #   Your own function: train(cfg, reward_funcs=[my_reward])
    num_generations: int = 4  # answers sampled per prompt (a "group"): more = a better baseline, slower steps
    max_completion_length: int = 16  # tokens per sampled answer: a date needs ~7; longer costs generation time
    temperature: float = 1.0  # sampling: higher = more varied answers in a group (more signal), more nonsense
    # --- optimisation
    learning_rate: float = 2e-4  # LoRA tolerates ~1e-4..5e-4; full fine-tuning wants ~1e-5..5e-5
    num_train_epochs: float = 1.0  # passes over train_file; ignored when max_steps > 0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides num_train_epochs)
    per_device_train_batch_size: int = 8  # bigger = steadier gradients and faster, more memory
    per_device_eval_batch_size: int = 8  # eval only: memory vs speed, no effect on results
    gradient_accumulation_steps: int = 1  # effective batch = batch x this, same memory
    max_length: int = 512  # tokens per example (longer are truncated): memory grows with it
    lr_scheduler_type: str = "cosine"  # cosine decays smoothly to 0; "constant" keeps the rate flat
    warmup_ratio: float = 0.05  # share of steps ramping the rate up from 0: avoids a bad first step
    weight_decay: float = 0.0  # pulls weights toward 0; rarely matters for LoRA
    max_grad_norm: float = 1.0  # clips the gradient norm: guards against a spike wrecking the weights
    seed: int = 42  # same seed, same data, same machine: same losses
    packing: bool = False  # concatenate short examples to max_length: fewer pad tokens, faster on short data
    group_by_length: bool = True  # SFT batches of similar length: less padding (13% fewer tokens on data/dates);
    #   the loss curve wobbles a little more, since batch lengths now vary in runs
    gradient_checkpointing: bool | None = None  # an extra forward per step, far less memory; None: on for 4-bit
    bf16: bool | None = None  # None: bf16 where the hardware has it (GPU, or CPU bf16 instructions);
    #   false: no bf16 - fp32 on a CPU (exact, slower), fp16 mixed precision on a GPU (as on a T4)
    optim: str | None = None  # None: adamw_8bit on GPU (8-bit states, less memory), adamw_torch on CPU
    assistant_only_loss: bool = True  # chats: loss on the answers only; False: every token
    completion_only_loss: bool = True  # prompt/completion data: loss on the completion only
    # --- logging, evaluation, checkpoints
    logging_steps: int = 10  # log train loss every N steps: smaller = finer curve, more noise
    eval_steps: int | None = None  # eval loss on eval_file every N steps; None: every 5 x logging_steps
    save_steps: int = 100  # checkpoint every N steps: resume point after a crash, disk per checkpoint
    save_total_limit: int | None = 2  # keep the newest N checkpoints (plus the best with early stopping)
    early_stopping_patience: int | None = None  # stop after N evals without a better eval loss; None: never
    report_to: str = "none"  # "tensorboard" also writes event files into output_dir/runs
    resume_from_checkpoint: bool | str | None = None  # true: newest checkpoint in output_dir, or a path


def _hints() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def explain(key: str, value, why: str, fix: str) -> str:
    """The one shape of every config problem: the setting, what is wrong, and the fix."""
    return f"config {key}={value!r}: {why}. Fix: {fix}."


def _error(key: str, value, why: str, fix: str) -> ValueError:
    return ValueError(explain(key, value, why, fix))


def _coerce(key: str, value, hint):
    """`value` (from YAML or a command-line string) as the type `hint` of field `key`."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    kinds = [a for a in args if a is not type(None)] or [hint]
    if bool in kinds and (isinstance(value, bool) or str(value).lower() in ("true", "false", "yes", "no")):
        return value if isinstance(value, bool) else str(value).lower() in ("true", "yes")
    for kind in kinds:
        if kind in (int, float) and not isinstance(value, bool):
            try:  # PyYAML reads 1e-4 as a string (YAML 1.1), so numbers are parsed here
                number = float(value)
                if kind is int and number != int(number):
                    continue
                return int(number) if kind is int else number
            except (TypeError, ValueError):
                continue
        if typing.get_origin(kind) is list:
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            if isinstance(value, str) and ("," in value or value.startswith("[")):
                return [v.strip(" '\"") for v in value.strip("[]").split(",") if v.strip(" '\"")]
            if isinstance(value, str) and str not in kinds:  # one name for a list-only field
                return [value.strip(" '\"")]
    if str in kinds and isinstance(value, str):
        return value
    names = " or ".join("null" if k is type(None) else getattr(k, "__name__", str(k)) for k in args or [hint])
    raise _error(key, value, f"expected {names}", f"write {key}=<{names}>")


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _error(key, value, f"not one of {', '.join(choices)}{hint}", f"use one of {', '.join(choices)}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise a ValueError naming the key and the fix for a bad value or combination; return cfg unchanged.

    Pure: the config's own names, types, ranges and combinations. What depends on this machine, its
    libraries or its files (bitsandbytes, TensorBoard, the optimizer and scheduler names transformers
    knows, the lm-eval tasks, the data files) is ftlab.preflight, which training runs before loading anything.
    """
    _check_choice("method", cfg.method, METHODS)
    _check_choice("adapter_placement", cfg.adapter_placement, ADAPTER_PLACEMENTS)
    _check_choice("task", cfg.task, TASKS)
    _check_choice("backend", cfg.backend, BACKENDS)
    _check_choice("report_to", cfg.report_to, REPORT_TO)
    for key in ("r", "lora_alpha", "num_virtual_tokens", "per_device_train_batch_size",
                "per_device_eval_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
                "save_steps"):
        if getattr(cfg, key) < 1:
            raise _error(key, getattr(cfg, key), "must be at least 1", f"set {key} to a positive integer")
    if cfg.learning_rate <= 0:
        raise _error("learning_rate", cfg.learning_rate, "must be positive",
                     "try 2e-4 for LoRA, 2e-5 for full")
    if not 0 <= cfg.lora_dropout < 1:
        raise _error("lora_dropout", cfg.lora_dropout, "must be in [0, 1)", "use 0.0 to 0.1")
    if not 0 <= cfg.warmup_ratio < 1:
        raise _error("warmup_ratio", cfg.warmup_ratio, "is a share of the steps, in [0, 1)", "use e.g. 0.05")
    if cfg.max_steps <= 0 and cfg.num_train_epochs <= 0:
        raise _error("num_train_epochs", cfg.num_train_epochs, "no steps to run",
                     "set num_train_epochs or max_steps")
    if cfg.task in PREFERENCE_TASKS and cfg.method in ("prefix", "prompt"):
        raise _error("method", cfg.method, f"prefix/prompt tuning with {cfg.task.upper()} is not supported (the virtual "
                     "tokens shift the chosen/rejected log-probs TRL compares)",
                     "use method=lora (or qlora, dora)")
    if cfg.task == "cpt" and cfg.method in ("prefix", "prompt"):
        raise _error("method", cfg.method, "continued pretraining packs the text into full sequences, but "
                     f"{cfg.method} tuning prepends virtual tokens to each", "use method=lora (or qlora, full)")
    if cfg.packing and cfg.method in ("prefix", "prompt"):
        raise _error("packing", cfg.packing, f"packing concatenates examples, but {cfg.method} tuning "
                     "prepends virtual tokens to each sequence", "set packing=false")
    _check_grpo(cfg)
    if cfg.packing and cfg.task in PREFERENCE_TASKS:
        raise _error("packing", cfg.packing, f"{cfg.task.upper()} scores whole chosen/rejected answers",
                     "set packing=false")
    if cfg.backend == "unsloth" and cfg.method not in UNSLOTH_METHODS:
        raise _error("method", cfg.method, f"Unsloth's get_peft_model builds only "
                     f"{', '.join(UNSLOTH_METHODS)}", "use one of those, or backend=transformers")
    if cfg.eval_steps is not None and cfg.eval_steps < 1:
        raise _error("eval_steps", cfg.eval_steps, "must be at least 1",
                     "set eval_steps to a positive integer")
    if cfg.early_stopping_patience is not None:
        if cfg.eval_file is None:
            raise _error("early_stopping_patience", cfg.early_stopping_patience, "early stopping watches "
                         "the eval loss, but there is no eval_file",
                         "set eval_file or remove early_stopping_patience")
        if cfg.save_steps % _eval_every(cfg):
            raise _error("save_steps", cfg.save_steps, f"early stopping restores the best checkpoint, so "
                         f"checkpoints must fall on evaluations (every {_eval_every(cfg)} steps)",
                         f"set save_steps to a multiple of eval_steps ({_eval_every(cfg)})")
    if cfg.method == "adapter" and cfg.init_adapter:
        raise _error("init_adapter", cfg.init_adapter, "bottleneck adapters train on the base as loaded",
                     "merge the earlier adapter (ftlab merge) and set model=<the merged folder>")
    if cfg.init_adapter and cfg.method == "qlora":
        raise _error("init_adapter", cfg.init_adapter, "merging an adapter into 4-bit weights rounds it",
                     "merge it first (ftlab merge) and set model=<the merged folder>, or use method=lora")
    if cfg.unseen_test_file and cfg.test_file is None:
        raise _error("unseen_test_file", cfg.unseen_test_file, "it is scored with the test evaluation",
                     "set test_file too, or unseen_test_file=null")
    if cfg.unseen_test_file and cfg.task in ("cpt", "grpo") + PREFERENCE_TASKS:
        raise _error("unseen_test_file", cfg.unseen_test_file, f"task={cfg.task} reports its own test figures",
                     "unseen_test_file=null (it is for sft)")
    if cfg.benchmark_tasks and cfg.test_file is None:
        raise _error("benchmark_tasks", cfg.benchmark_tasks, "benchmarks run with the test evaluation",
                     "set test_file, or benchmark_tasks=null")
    return cfg


def _check_grpo(cfg: TrainConfig) -> None:
    """GRPO's own combinations: group size, batch divisibility, reward names given, starting point."""
    for key in ("num_generations", "max_completion_length"):
        if getattr(cfg, key) < (2 if key == "num_generations" else 1):
            raise _error(key, getattr(cfg, key), "too small" + (": a group of one answer has no relative "
                         "advantage" if key == "num_generations" else ""), f"set {key} to e.g. 4 or 16")
    if cfg.temperature <= 0:
        raise _error("temperature", cfg.temperature, "GRPO samples, so it must be positive",
                     "use 0.7..1.2 (higher: more varied groups)")
    if cfg.beta is not None and cfg.beta < 0:
        raise _error("beta", cfg.beta, "must be >= 0", "use e.g. 0.1 for DPO, 0.0..0.04 for GRPO")
    if cfg.warm_start_steps < 0:
        raise _error("warm_start_steps", cfg.warm_start_steps, "must be >= 0", "0 (none) or e.g. 20")
    if cfg.task != "grpo":
        if cfg.warm_start_steps:
            raise _error("warm_start_steps", cfg.warm_start_steps, f"the SFT warm start is part of grpo, not "
                         f"task={cfg.task}", "set warm_start_steps=0, or use init_adapter=<an SFT run folder>")
        return
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if batch % cfg.num_generations:
        raise _error("per_device_train_batch_size", cfg.per_device_train_batch_size, f"GRPO counts the batch in "
                     f"answers: {batch} per step (x gradient_accumulation_steps) must be a multiple of "
                     f"num_generations={cfg.num_generations}", f"set per_device_train_batch_size to "
                     f"{cfg.num_generations * max(1, batch // cfg.num_generations)}")
    if cfg.method in ("prefix", "prompt"):
        raise _error("method", cfg.method, "prefix/prompt tuning with GRPO is not supported (TRL's generation "
                     "and log-probs do not see the virtual tokens)", "use method=lora (or qlora, dora)")
    if cfg.packing:
        raise _error("packing", cfg.packing, "GRPO generates from prompts; there is nothing to pack",
                     "set packing=false")
    if cfg.backend == "unsloth":
        raise _error("backend", cfg.backend, "ftlab runs GRPO with TRL's own generation on transformers + PEFT, "
                     "not Unsloth's patched GRPO path", "use backend=auto or transformers")
    if cfg.init_adapter and cfg.warm_start_steps:
        raise _error("warm_start_steps", cfg.warm_start_steps, "init_adapter already gives the starting policy",
                     "set warm_start_steps=0, or init_adapter=null")


def _eval_every(cfg: TrainConfig) -> int:
    return cfg.eval_steps or cfg.logging_steps * 5


def _find_file(key: str, value: str, folders: list[Path]) -> str:
    """`value` as an absolute path: the first of `folders` that holds it; else an error naming each place."""
    if Path(value).expanduser().is_absolute():
        return value
    for folder in folders:
        if (folder / value).exists():
            return str((folder / value).resolve())
    places = " or ".join(str((f / value).resolve()) for f in folders)
    raise _error(key, value, f"no such file (looked for {places})",
                 f"give a path that exists, relative to the config file or to where you run, or set {key}=null")


def config_from_dict(values: dict, overrides: typing.Iterable[str] = (), base_dir: str | Path | None = None
                     ) -> TrainConfig:
    """A validated TrainConfig from a dict (e.g. parsed YAML) plus 'key=value' override strings.

    base_dir: the folder of the YAML file `values` came from. With it, relative input files (FILE_KEYS) are
    made absolute: the dict's beside base_dir first, the overrides' in the working directory first.
    """
    hints, names = _hints(), [f.name for f in dataclasses.fields(TrainConfig)]
    values = {k: v for k, v in (values or {}).items() if k != RECORD_KEY}
    typed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value. Fix: write e.g. learning_rate=1e-4.")
        typed[key.strip()] = value.strip()
    for key in [*values, *typed]:
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"config key {key!r} is not a TrainConfig field{hint} "
                             f"Fix: use one of the fields listed in ftlab/config.py.")
    cfg_values = {k: _coerce(k, v, hints[k]) for k, v in {**values, **typed}.items()}
    if base_dir is not None:
        here, beside = Path.cwd(), Path(base_dir)
        for key in FILE_KEYS:
            if isinstance(cfg_values.get(key), str):
                folders = [here, beside] if key in typed else [beside, here]
                cfg_values[key] = _find_file(key, cfg_values[key], folders)
    return validate(TrainConfig(**cfg_values))


def find_config(name: str | Path) -> Path:
    """A YAML file's path, or the shipped config of that name ('dates_lora'; see ftlab.shipped)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):  # a bare name: a shipped config?
        try:
            return config_path(path.name)
        except FileNotFoundError:
            pass
    raise FileNotFoundError(f"no config file {str(name)!r}. Fix: name a shipped config "
                            f"({', '.join(config_names())}) or give the path to a YAML file.")


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (a path, or a shipped config's name such as "dates_smoke"; None: the defaults)
    and apply 'key=value' overrides. Relative data paths in the file resolve against the file's folder."""
    if path is None:
        return config_from_dict({}, overrides, base_dir=Path.cwd())
    path = find_config(path)
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a YAML mapping of key: value. "
                         "Fix: see the shipped configs/dates_lora.yaml (`ftlab train dates_lora`).")
    return config_from_dict(values, overrides, base_dir=path.resolve().parent)


def save_config(cfg: TrainConfig, path: str | Path, versions: dict | None = None) -> Path:
    """Write cfg as YAML (every field, defaults included); `versions` is kept as a record, ignored on load."""
    values = dataclasses.asdict(cfg)
    if versions:
        values[RECORD_KEY] = versions
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def default_optim(on_gpu: bool) -> str:
    """ftlab's optimizer when the config names none (training, estimate and the panel all ask here).

    On a GPU bitsandbytes' 8-bit AdamW (Unsloth's default): optimizer states in 8 bits, a quarter of
    AdamW's. Not the paged variant: paging allocates CUDA managed memory. On a CPU plain AdamW (bitsandbytes'
    8-bit optimizers need CUDA)."""
    return "adamw_8bit" if on_gpu else "adamw_torch"


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A copy of cfg with this machine's automatic choices: backend, optim, gradient_checkpointing."""
    import torch

    from ftlab.hardware import choose_backend

    backend, _ = choose_backend(cfg.backend)
    if backend == "unsloth" and cfg.method not in UNSLOTH_METHODS:  # only reachable with backend=auto
        print(f"ftlab: Unsloth builds {', '.join(UNSLOTH_METHODS)} only: using transformers + PEFT for "
              f"method={cfg.method} (set backend=transformers to silence this)")
        backend = "transformers"
    if backend == "unsloth" and cfg.task == "grpo":  # only reachable with backend=auto
        print("ftlab: GRPO runs on transformers + PEFT with TRL's own generation: Unsloth's GRPO path needs its "
              "patched trainer and vLLM fast inference, which ftlab does not wire (set backend=transformers "
              "to silence this)")
        backend = "transformers"
    on_gpu = torch.cuda.is_available()
    optim = cfg.optim or default_optim(on_gpu)
    # 4-bit training is chosen to save memory, so activations are recomputed to save more
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:
        checkpointing = cfg.method == "qlora"
    return dataclasses.replace(cfg, backend=backend, optim=optim, gradient_checkpointing=checkpointing,
                               eval_steps=_eval_every(cfg) if cfg.eval_file else cfg.eval_steps)


__all__ = ["METHODS", "PREFERENCE_TASKS", "TASKS", "TrainConfig", "config_from_dict", "default_optim", "find_config", "load_config",
           "resolve", "save_config", "validate"]
