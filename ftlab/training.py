"""Run one fine-tuning job from a `TrainConfig`: the only module that touches TRL.

`train(cfg)` loads the model, adds the adapter (adapters.py), prepares the data, trains with TRL's
`SFTTrainer` or `DPOTrainer`, and writes the run folder: adapter + tokenizer, finetune_config.yaml,
metrics.jsonl, loss_curve.png, lineage.json and finetune_report.md. It returns the real objects in a
`TrainResult`. SFT trains on the assistant tokens only, marked by `ftlab.lossmask` (the same code the
loss-mask viewer shows), because SmolLM2's chat template has no {% generation %} markers for TRL's own
`assistant_only_loss`. On a GPU an out-of-memory error is retried with smaller batches (same effective
batch); a NaN stops the run with the likely causes. On a CPU with bf16 instructions the frozen base is
bf16, steps run under bf16 autocast, short rows use eager attention and TRL's LM head scores only the
answer tokens (docs/benchmarks.md measures each). Leaves out: merging (merge.py), hyperparameter search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, ProgressCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils.notebook import NotebookProgressCallback

from ftlab import report
from ftlab.adapters import add_adapter, trainable_parameters
from ftlab.config import TrainConfig, library_versions, load_config, resolve, save_config
from ftlab.data import convert
from ftlab.formats import conversations
from ftlab.hardware import Precision, choose_precision
from ftlab.lossmask import loss_mask
from ftlab.models import load_model
from ftlab.monitor import LivePlot, MetricsLogger, NanGuard, diagnose

N_SAMPLES = 5  # test generations shown side by side in the report


class TrainingDiverged(RuntimeError):
    """Loss or gradients turned NaN/inf; the message names likely causes and the last good checkpoint."""


@dataclass
class TrainResult:
    trainer: object  # trl.SFTTrainer or trl.DPOTrainer, after training
    model: object  # the trained model: a PeftModel (or the full model for method=full)
    tokenizer: object
    run_dir: Path  # cfg.output_dir: adapter, tokenizer, config, metrics, plot, report
    history: list[dict]  # trainer.state.log_history: one dict per log/eval event
    metrics: dict  # the report's numbers: losses, time, tokens/s, memory, exact match base/tuned
    config: TrainConfig | None = None  # the resolved config the run used (after any OOM retries)


# ---------------------------------------------------------------- data


def read_rows(path, tokenizer, cfg: TrainConfig) -> list[dict]:
    """Converted rows of a data file (ftlab.data.convert); rows over max_length are rejected (it warns)."""
    conv = convert(path, tokenizer=tokenizer, max_length=cfg.max_length)
    want = ("preference",) if cfg.task == "dpo" else ("openai", "sharegpt", "alpaca", "prompt_completion")
    if conv.format not in want:
        need = "prompt/chosen/rejected rows" if cfg.task == "dpo" else "chat or prompt/completion rows"
        fix = "set task=dpo" if conv.format == "preference" else "set task=sft"
        raise ValueError(f"{path} holds {conv.format} rows, but task={cfg.task} needs {need}. "
                         f"Fix: {fix} or use another file.")
    if not conv.rows:
        raise ValueError(f"{path}: no usable rows ({conv.summary()}). Fix: see ftlab.data.check_file.")
    return conv.rows


def sft_example(row: dict, tokenizer, cfg: TrainConfig) -> dict:
    """{"input_ids", "assistant_masks"}: a chat's tokens and which carry loss (1); TRL makes the labels."""
    view = loss_mask(row, tokenizer)  # assistant answers + their end-of-turn token
    ids, mask = view.input_ids, view.mask
    if "completion" in row:  # prompt/completion: only the completion's tokens (not earlier assistant turns)
        if cfg.completion_only_loss:
            head = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            n_prompt = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            mask = [0] * n_prompt + mask[n_prompt:]
        else:
            mask = [1] * len(ids)
    elif not cfg.assistant_only_loss:
        mask = [1] * len(ids)
    return {"input_ids": ids, "assistant_masks": mask}


def sft_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Pre-tokenized SFT data; SFTTrainer builds labels (-100 where the mask is 0), truncates and packs it."""
    return Dataset.from_list([sft_example(r, tokenizer, cfg) for r in read_rows(path, tokenizer, cfg)])


def dpo_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Conversational prompt/chosen/rejected rows, as DPOTrainer reads them."""
    return Dataset.from_list(read_rows(path, tokenizer, cfg))


# ---------------------------------------------------------------- trainer


def _checkpointing_args(config_class, on: bool) -> dict:
    """Activation checkpointing under the name this transformers reads.

    transformers 5.23 renamed `gradient_checkpointing*` to `activation_checkpointing*` and warns on the old
    names; the versions Unsloth pins (down to 5.17) know only the old ones."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def trainer_args(cfg: TrainConfig, precision: Precision):
    """SFTConfig / DPOConfig from a resolved TrainConfig: same names, plus what ftlab decides for you."""
    from trl import DPOConfig, SFTConfig

    evaluating = cfg.eval_file is not None
    common = dict(
        output_dir=cfg.output_dir, learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5 reads a float < 1 as a share of the steps
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
        optim=cfg.optim,
        # Unsloth installs its own (offloading) checkpointing in get_peft_model; the Trainer must not add more
        **_checkpointing_args(SFTConfig, cfg.gradient_checkpointing and cfg.backend != "unsloth"),
        bf16=precision.bf16, fp16=precision.fp16,  # GPU mixed precision; on CPU see autocast() below
        use_cpu=not torch.cuda.is_available(),
        logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps" if evaluating else "no", eval_steps=cfg.eval_steps if evaluating else None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.early_stopping_patience is not None,
        metric_for_best_model="eval_loss" if cfg.early_stopping_patience is not None else None,
        report_to=cfg.report_to, include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,  # tokenized data sit in memory: workers would only add start-up time
        disable_tqdm=False,
    )
    if cfg.task == "dpo":
        return DPOConfig(**common, beta=cfg.beta)
    # Length-grouped batches: LengthGroupedSampler reads the lengths of the tokenized rows (input_ids)
    grouped = cfg.group_by_length and not cfg.packing
    common["train_sampling_strategy"] = "group_by_length" if grouped else "random"
    # Data arrive tokenized with assistant masks (sft_example), so TRL's own masking options stay off.
    return SFTConfig(**common, packing=cfg.packing, assistant_only_loss=False, completion_only_loss=None)


def build_trainer(cfg: TrainConfig, model, tokenizer, train_ds, eval_ds, callbacks, precision):
    """TRL's SFTTrainer or DPOTrainer, ready to train."""
    from trl import DPOTrainer, SFTTrainer

    args = trainer_args(cfg, precision)
    if not torch.cuda.is_available():
        score_loss_positions_only()
    callbacks = list(callbacks)
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.task == "dpo":
        # ref_model=None with a PeftModel: TRL computes the reference log-probs with the adapter disabled,
        # so the base model serves as reference without a second copy in memory
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)


EAGER_ATTENTION_MAX_MB = 256  # attention probabilities kept for the backward pass, all layers, one batch


def use_fastest_attention(model, train_ds, cfg: TrainConfig) -> None:
    """On a CPU, plain ("eager") attention for short sequences: PyTorch's SDPA backward costs ~10 ms per
    layer even on 80-token batches (measured: a LoRA step 2.7 s -> 2.3 s). Eager keeps the attention
    probabilities (batch x heads x length^2, fp32) for the backward pass, so it is chosen only while those
    stay under EAGER_ATTENTION_MAX_MB for the longest training example; long sequences keep SDPA.
    """
    if torch.cuda.is_available() or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    if "input_ids" in train_ds.column_names:
        longest = max(len(ids) for ids in train_ds["input_ids"])
    else:  # DPO rows are tokenized by TRL later: assume the longest allowed
        longest = cfg.max_length
    longest = min(longest, cfg.max_length)
    heads, layers = model.config.num_attention_heads, model.config.num_hidden_layers
    mb = cfg.per_device_train_batch_size * heads * longest**2 * 4 * layers / 2**20
    if mb <= EAGER_ATTENTION_MAX_MB:
        model.set_attn_implementation("eager")
        print(f"ftlab: eager attention on CPU (faster than SDPA for sequences up to {longest} tokens; "
              f"{mb:.0f} MB of attention kept for the backward pass)")


def check_trl_trains_here() -> None:
    """Refuse early, with the fix, where the installed TRL cannot compute its loss.

    TRL 1.15 (the newest Unsloth allows) computes the SFT and DPO losses in a Triton kernel with no other
    path; PyTorch's CPU wheels have no Triton, and the kernel needs a GPU anyway. TRL 1.16 added a torch
    path. Without this check the first training step fails inside TRL ('NoneType' has no attribute 'apply').
    """
    import trl
    from packaging.version import Version

    if Version(trl.__version__) >= Version("1.16") or torch.cuda.is_available():
        return
    raise RuntimeError(
        f"TRL {trl.__version__} computes its training loss in a Triton kernel that runs only on a CUDA GPU, and "
        "this machine has none. Fix: pip install -U 'trl>=1.16' (it adds a CPU path; ftlab supports it). "
        "TRL 1.15 is for GPU machines with Unsloth, which pins trl<=1.15.")


def score_loss_positions_only() -> bool:
    """Make TRL's fused LM head score only the positions that carry loss on a CPU too; True when done.

    TRL projects hidden states through the LM head (vocabulary 49k for SmolLM2) in tiles without keeping the
    full logits. On CUDA/XPU it keeps only the positions whose label is not -100; elsewhere it scores every
    position, so that compilers (Neuron) see fixed shapes. Eager CPU training compiles nothing, and with
    loss on the answers only most positions are prompt or padding: scoring only the answers skips most of
    the LM-head matmul and softmax, forward and backward. Same loss, same gradients (a test checks).
    The switch is TRL's private `_use_triton` as imported into trl.trainer.utils, read only for that
    choice there; if TRL renames it, ftlab says so once and trains the slower way.
    """
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None:
        print("ftlab: this TRL has no trl.trainer.utils._use_triton; its LM head scores every position on CPU "
              "(slower, same results)")
        return False
    if not getattr(current, "ftlab_cpu", False):
        def use_compact(device, _original=current):
            return device.type == "cpu" or _original(device)

        use_compact.ftlab_cpu = True
        trl_utils._use_triton = use_compact
    return True


def base_dtype(cfg: TrainConfig, precision: Precision) -> torch.dtype | None:
    """Weights of the base model: fp32 master weights for full fine-tuning; bf16 for the frozen base of the
    adapter methods on a CPU with bf16 (half the memory, no per-step weight casts; the adapter stays fp32);
    otherwise load_model's default (bf16/fp16 on a GPU, fp32 on other CPUs)."""
    if cfg.method == "full":
        return torch.float32
    return torch.bfloat16 if precision.cpu_autocast_bf16 else None


def autocast(precision: Precision):
    """bf16 autocast on a CPU with bf16 instructions (faster LoRA steps); nothing elsewhere.

    Trainer's bf16=True does not speed up CPU training (measured), so ftlab wraps the steps itself.
    Weights and optimizer state stay fp32; only matmuls run in bf16. cache_enabled=False matters: autocast
    keeps one bf16 copy of every trainable weight until the context exits, so around a whole training run
    the forward would keep using the step-1 weights while the optimizer updates the fp32 ones.
    """
    if precision.cpu_autocast_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def resume_point(cfg: TrainConfig) -> str | None:
    """The checkpoint to resume from (cfg.resume_from_checkpoint: true = newest in output_dir, or a path)."""
    if not cfg.resume_from_checkpoint:
        return None
    if cfg.resume_from_checkpoint is True:
        last = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
        if last is None:
            raise ValueError(f"resume_from_checkpoint=true but {cfg.output_dir} has no checkpoint-* folder. "
                             "Fix: start without resume_from_checkpoint, or point it at a checkpoint folder.")
        return last
    if not Path(cfg.resume_from_checkpoint).is_dir():
        raise ValueError(f"resume_from_checkpoint={cfg.resume_from_checkpoint!r} is not a folder. "
                         "Fix: give a checkpoint-N folder, or true for the newest one in output_dir.")
    return str(cfg.resume_from_checkpoint)


# ---------------------------------------------------------------- OOM safety net


def smaller_step(cfg: TrainConfig) -> tuple[TrainConfig, str] | None:
    """The next config to try after running out of memory, and what changed; None when nothing is left."""
    bs, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    if bs > 1:
        new_bs = bs // 2 if bs % 2 == 0 else 1
        new_ga = ga * bs // new_bs  # same effective batch: bs x ga examples per optimizer step
        change = f"per_device_train_batch_size {bs} -> {new_bs}, gradient_accumulation_steps {ga} -> {new_ga}"
        return dataclasses.replace(cfg, per_device_train_batch_size=new_bs,
                                   gradient_accumulation_steps=new_ga), change
    if not cfg.gradient_checkpointing:
        return dataclasses.replace(cfg, gradient_checkpointing=True), "gradient_checkpointing off -> on"
    return None


def fit_with_oom_retries(cfg: TrainConfig, attempt):
    """attempt(cfg) -> value; on torch.OutOfMemoryError retry with smaller_step(cfg) until nothing is left.

    Returns (value, the cfg that worked).
    """
    while True:
        try:
            return attempt(cfg), cfg
        except torch.OutOfMemoryError:
            pass  # leave the except block first, so the traceback's frames (and their tensors) can be freed
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        step = smaller_step(cfg)
        if step is None:
            raise RuntimeError(
                f"out of GPU memory even with per_device_train_batch_size=1, gradient_accumulation_steps="
                f"{cfg.gradient_accumulation_steps} and gradient checkpointing. Fix: method=qlora (4-bit "
                f"base), or a shorter max_length (now {cfg.max_length}), or a smaller model.")
        cfg, change = step
        print(f"ftlab: out of GPU memory; retrying with {change} (same effective batch)")


# ---------------------------------------------------------------- the run


def _rows_for_scoring(path, tokenizer, cfg: TrainConfig) -> list[dict]:
    """Test rows as {"messages": [...]} chats (what ftlab.tasks.score reads), the first cfg.test_limit."""
    rows = [{"messages": conversations(r)[0]} for r in convert(path).rows]
    return rows[:cfg.test_limit] if cfg.test_limit else rows


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)


def _last(history: list[dict], key: str):
    return next((h[key] for h in reversed(history) if key in h), None)


def _base_revision(cfg: TrainConfig, model):
    """What identifies the base weights in the lineage: the cached safetensors file (hashed) or revision."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = Path(cfg.model) / "model.safetensors" if Path(cfg.model).is_dir() else \
            try_to_load_from_cache(cfg.model, "model.safetensors")
        if isinstance(path, (str, Path)) and Path(path).is_file():
            return str(path)
    except Exception:  # noqa: BLE001, S110 - a sharded or unusual checkpoint: record the revision instead
        pass
    return getattr(model.config, "_commit_hash", None)


def train(cfg: TrainConfig, *, callbacks=(), live_plot: bool = False, progress_bar: bool = True) -> TrainResult:
    """Fine-tune as cfg says and write the run folder; returns the trainer, model, tokenizer and numbers.

    callbacks: extra transformers TrainerCallbacks. live_plot: add monitor.LivePlot (a notebook figure).
    progress_bar: False drops transformers' progress bar (the hyperparameter panel's Train button: from a
    widget callback the notebook bar stops redrawing after its first update; the live plot shows progress).
    """
    cfg = resolve(cfg)
    if cfg.train_file is None:
        raise ValueError("train_file is not set. Fix: train_file=data/dates/train.jsonl (or your JSONL).")
    check_trl_trains_here()
    precision = choose_precision(bf16=cfg.bf16)
    print(f"ftlab: {precision.reason}")
    resume = resume_point(cfg)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)

    logger, guard = MetricsLogger(run_dir), NanGuard()
    extra = [logger, guard, *callbacks] + ([LivePlot()] if live_plot else [])
    datasets = {}  # tokenized once, shared by OOM retries

    def attempt(cfg):
        set_seed(cfg.seed)  # same initial adapter weights on every attempt
        model, tok = load_model(cfg.model, load_in_4bit=cfg.method == "qlora", backend=cfg.backend,
                                dtype=base_dtype(cfg, precision),
                                max_seq_length=cfg.max_length, verbose=not datasets)
        if not datasets:
            make = dpo_dataset if cfg.task == "dpo" else sft_dataset
            datasets["train"] = make(cfg.train_file, tok, cfg)
            datasets["eval"] = make(cfg.eval_file, tok, cfg) if cfg.eval_file else None
        use_fastest_attention(model, datasets["train"], cfg)
        model = add_adapter(model, cfg)
        trainer = build_trainer(cfg, model, tok, datasets["train"], datasets["eval"], extra, precision)
        if not progress_bar:
            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(NotebookProgressCallback)
        start = time.perf_counter()
        with autocast(precision):
            out = trainer.train(resume_from_checkpoint=resume)
        return trainer, tok, out, time.perf_counter() - start

    (trainer, tok, out, seconds), cfg = fit_with_oom_retries(cfg, attempt)
    if guard.tripped:
        last = get_last_checkpoint(cfg.output_dir)
        where = f"{last}; resume with resume_from_checkpoint={last}" if last else \
            f"none yet (save_steps={cfg.save_steps})"
        raise TrainingDiverged(f"{guard.message} Last good checkpoint: {where}.")

    model = trainer.model
    history = trainer.state.log_history
    last_eval = next((h["step"] for h in reversed(history) if "eval_loss" in h), None)
    if datasets["eval"] is not None and last_eval != trainer.state.global_step:
        with autocast(precision):
            trainer.evaluate()  # the final eval loss at the last step (periodic evals fell before it)
    trainer.save_model(str(run_dir))  # adapter_config.json + adapter_model.safetensors (+ tokenizer)
    metrics = _summary(cfg, model, trainer, out, seconds, history)
    if not trainer.is_world_process_zero():  # under torchrun/accelerate: one process writes the run folder
        return TrainResult(trainer, model, tok, run_dir, history, metrics, cfg)
    tok.save_pretrained(str(run_dir))
    if cfg.test_file:
        metrics.update(_score_base_and_tuned(cfg, model, tok))
    _write_run_folder(cfg, model, run_dir, history, metrics)
    return TrainResult(trainer, model, tok, run_dir, history, metrics, cfg)


def _frozen_dtype(cfg: TrainConfig, model) -> str:
    """dtype of the weights that did not train ("nf4" for a 4-bit base; the trained ones for full)."""
    if cfg.method == "qlora":
        return "nf4"
    param = next((p for p in model.parameters() if not p.requires_grad), next(model.parameters()))
    return str(param.dtype).removeprefix("torch.")


def _summary(cfg, model, trainer, out, seconds, history) -> dict:
    trainable, total = trainable_parameters(model)
    tokens = trainer.state.num_input_tokens_seen or 0
    return {
        "method": cfg.method, "task": cfg.task, "base_model": cfg.model,
        "trainable_params": trainable, "total_params": total,
        "base_dtype": _frozen_dtype(cfg, model),
        "train_time_s": seconds, "steps": trainer.state.global_step,
        "tokens_per_s": tokens / max(out.metrics.get("train_runtime", seconds), 1e-9),
        "peak_memory_mb": _peak_memory_mb(),
        "final_train_loss": _last(history, "loss"), "final_eval_loss": _last(history, "eval_loss"),
    }


def _score_base_and_tuned(cfg: TrainConfig, model, tok) -> dict:
    """The report's evaluation on the test rows: base vs tuned side by side (ftlab.evaluation), greedy.

    Exact match and contains on the generated answers; loss and perplexity on the reference answers
    (not for prefix/prompt tuning, whose virtual tokens eval_loss cannot see); a few generations; and the
    lm-evaluation-harness tasks in cfg.benchmark_tasks when lm-eval is installed.
    """
    from ftlab.evaluation import evaluate

    rows = _rows_for_scoring(cfg.test_file, tok, cfg)
    model.eval()  # Trainer leaves dropout on
    loss = cfg.method not in ("prefix", "prompt")
    if hasattr(model, "disable_adapter"):  # every PEFT method: the base is the same model, adapter off
        name = model.active_adapter
        # batches of 8: generating 16 at a time through a PeftModel on a bf16 base peaked 430 MB higher
        table, answers = evaluate(model, rows, tokenizer=tok, adapters=[name], loss=loss, max_new_tokens=16,
                                  batch_size=8)
        table, answers = table.rename(index={name: "tuned"}), answers.rename(columns={name: "tuned"})
        base_model = None
    else:  # full fine-tuning changed the weights themselves: load the base again
        base_model, _ = load_model(cfg.model, verbose=False)
        table, answers = evaluate({"base": (base_model.eval(), tok), "tuned": (model, tok)}, rows,
                                  loss=loss, max_new_tokens=16, batch_size=8)
    out = {"base_exact_match": float(table.loc["base", "exact_match"]),
           "tuned_exact_match": float(table.loc["tuned", "exact_match"]), "n_test": len(rows),
           "eval_table": table, "samples": answers.head(N_SAMPLES).to_dict("records")}
    if cfg.benchmark_tasks:
        out["benchmark_table"] = _benchmark(cfg, model, tok, base_model)
    return out


def _benchmark(cfg: TrainConfig, model, tok, base_model):
    """lm-evaluation-harness on cfg.benchmark_tasks, base and tuned in one table; None (said) without lm-eval."""
    from ftlab.evaluation import LM_EVAL_MISSING, benchmark

    if importlib.util.find_spec("lm_eval") is None:
        print(f"ftlab: benchmark_tasks skipped: {LM_EVAL_MISSING}")
        return None
    if base_model is None:
        with model.disable_adapter():
            base = benchmark(model, tok, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    else:
        base = benchmark(base_model, tok, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    tuned = benchmark(model, tok, cfg.benchmark_tasks, limit=cfg.benchmark_limit)
    return base.rename(columns={"value": "base"}).assign(tuned=tuned["value"].to_numpy())


def _write_run_folder(cfg: TrainConfig, model, run_dir: Path, history: list[dict], metrics: dict) -> None:
    save_config(cfg, run_dir / "finetune_config.yaml", versions=library_versions())
    report.save_loss_plot(history, run_dir / report.LOSS_PLOT)
    data_files = [p for p in (cfg.train_file, cfg.eval_file, cfg.test_file) if p]
    lineage = report.lineage(cfg.model, _base_revision(cfg, model), data_files, cfg)
    (run_dir / "lineage.json").write_text(json.dumps(lineage, indent=2))
    metrics["diagnosis"] = diagnose(history)
    report.write_report(run_dir, {**metrics, "lineage": lineage})


def run_from_cli(config_path, overrides=()) -> Path:
    """`ftlab train CONFIG.yaml key=value ...`: train and print where the run folder is."""
    result = train(load_config(config_path, overrides))
    if not result.trainer.is_world_process_zero():  # under torchrun / accelerate launch: one summary line
        return result.run_dir
    m = result.metrics
    line = f"ftlab: run folder {result.run_dir} ({m['train_time_s']:.0f} s training"
    if m.get("tuned_exact_match") is not None:
        line += f"; exact match base {m['base_exact_match']:.0%} -> tuned {m['tuned_exact_match']:.0%}"
    print(line + f"); report: {result.run_dir / 'finetune_report.md'}")
    return result.run_dir
