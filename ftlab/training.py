"""Run one fine-tuning job from a `TrainConfig`: the recipe, and the only module that touches TRL's trainers.

`train(cfg)` reads top to bottom as the steps of training: check the machine (preflight) -> load the model
-> add the adapter -> prepare the data -> build TRL's `SFTTrainer`, `DPOTrainer`, `KTOTrainer`, `ORPOTrainer` or
`GRPOTrainer` -> fit (with resume and,
on a GPU, out-of-memory retries at the same effective batch) -> evaluate base vs tuned -> write the run
folder. It returns the real objects in a `TrainResult`. A NaN stops the run with the likely causes.
GRPO (task=grpo) adds two steps at the start: the reward functions (ftlab.rewards), and the starting
policy (an SFT warm start or init_adapter, merged into the weights before the GRPO adapter goes on).
The pieces live where their idea does: the training examples and loss mask in examples.py, the CPU speed
levers in speed.py, the run's evaluation in evaluation.py, the run folder in report.py.
Leaves out: merging (merge.py), hyperparameter search.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, ProgressCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils.notebook import NotebookProgressCallback

from ftlab import speed
from ftlab.adapters import add_adapter, trainable_parameters
from ftlab.bottleneck import save_bottlenecks
from ftlab.config import TrainConfig, load_config, resolve
from ftlab.evaluation import evaluate_run, evaluate_text_run
from ftlab.examples import training_dataset
from ftlab.hardware import Precision, choose_precision, peak_memory_mb
from ftlab.merge import start_from
from ftlab.models import load_model
from ftlab.monitor import LivePlot, MetricsLogger, NanGuard
from ftlab.preflight import preflight
from ftlab.report import accuracy_line, perplexity_line, write_run_folder
from ftlab.rewards import RewardError, reward_functions, reward_name


class TrainingDiverged(RuntimeError):
    """Loss or gradients turned NaN/inf; the message names likely causes and the last good checkpoint."""


@dataclass
class TrainResult:
    trainer: object  # trl.SFTTrainer, DPOTrainer or GRPOTrainer, after training
    model: object  # the trained model: a PeftModel (or the full model for method=full)
    tokenizer: object
    run_dir: Path  # cfg.output_dir: adapter, tokenizer, config, metrics, plot, report
    history: list[dict]  # trainer.state.log_history: one dict per log/eval event
    metrics: dict  # the report's numbers: losses, time, tokens/s, memory, exact match base/tuned
    config: TrainConfig | None = None  # the resolved config the run used (after any OOM retries)


# ---------------------------------------------------------------- the recipe


def base_dtypes(cfg: TrainConfig, precision: Precision) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(weight dtype, 4-bit matmul dtype) of the base for this run's precision; None: load_model's default.

    Under fp16 mixed precision (a T4, or bf16=false on a newer GPU) the frozen base and the 4-bit matmuls are
    fp16 too: load_model's default would be bf16 on an Ampere or newer GPU, a run the user asked to keep off
    bf16, and Unsloth refuses a bf16 model under fp16 training. Full fine-tuning keeps fp32 master weights."""
    if precision.fp16 and cfg.method != "full":
        return torch.float16, torch.float16 if cfg.method == "qlora" else None
    return speed.bf16_base(cfg, precision), None


def train(cfg: TrainConfig, *, reward_funcs=None, callbacks=(), live_plot: bool = False,
          progress_bar: bool = True) -> TrainResult:
    """Fine-tune as cfg says and write the run folder; returns the trainer, model, tokenizer and numbers.

    reward_funcs: task=grpo: functions (or ftlab.rewards names) replacing cfg.reward_funcs; the run's config
    records their names. callbacks: extra transformers TrainerCallbacks. live_plot: add monitor.LivePlot.
    progress_bar: False drops transformers' progress bar (the hyperparameter panel's Train button: from a
    widget callback the notebook bar stops redrawing after its first update; the live plot shows progress).
    """
    cfg = resolve(cfg)
    preflight(cfg, own_rewards=bool(reward_funcs))  # every problem with machine, libraries, files, up front
    rewards = reward_functions(reward_funcs or cfg.reward_funcs) if cfg.task == "grpo" else []
    cfg = dataclasses.replace(cfg, reward_funcs=[reward_name(f) for f in rewards] or cfg.reward_funcs)
    policy = starting_policy(cfg)  # an adapter folder to merge first (grpo: SFT, so answers can earn a reward)
    precision = choose_precision(bf16=cfg.bf16)
    print(f"ftlab: {precision.reason}")
    resume, run_dir = resume_point(cfg), Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger, guard = MetricsLogger(run_dir), NanGuard()
    callbacks = [logger, guard, *callbacks] + ([LivePlot()] if live_plot else [])
    data = {}  # {"train", "eval"}: tokenized on the first attempt, reused by out-of-memory retries

    def attempt(cfg):
        set_seed(cfg.seed)  # same initial adapter weights on every attempt
        first_attempt = not data  # the data is tokenized on the first attempt and kept
        dtype, compute_dtype = base_dtypes(cfg, precision)
        model, tok = load_model(cfg.model, load_in_4bit=cfg.method == "qlora", backend=cfg.backend, dtype=dtype,
                                compute_dtype=compute_dtype, max_seq_length=cfg.max_length, verbose=first_attempt)
        if policy:
            model = start_from(model, policy)  # the starting policy; the trained adapter goes on top
        if not data:
            data["train"] = training_dataset(cfg.train_file, tok, cfg)
            data["eval"] = training_dataset(cfg.eval_file, tok, cfg) if cfg.eval_file else None
        eager = speed.eager_attention(model, data["train"], cfg)
        if first_attempt and not torch.cuda.is_available():  # once, not again on an out-of-memory retry
            print(f"ftlab: {speed.levers_line(cfg, precision, eager=eager, loss_positions=scored_only)}")
        model = add_adapter(model, cfg)
        trainer = build_trainer(cfg, model, tok, data["train"], data["eval"], callbacks, precision, rewards)
        if not progress_bar:
            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(NotebookProgressCallback)
        start = time.perf_counter()
        try:
            out = trainer.train(resume_from_checkpoint=resume)
        except RewardError as err:  # the learner's message, without TRL's frames around it
            raise RewardError(str(err)) from None
        return trainer, tok, out, time.perf_counter() - start

    with speed.loss_positions_only() as scored_only, speed.autocast(precision):  # attempt() reads scored_only
        (trainer, tok, out, seconds), cfg = fit_with_oom_retries(cfg, attempt)
        stop_if_diverged(guard, cfg)
        final_eval(trainer, has_eval=data["eval"] is not None)
    model, history = trainer.model, trainer.state.log_history
    if cfg.method == "adapter":
        save_bottlenecks(model, run_dir)  # only the adapters: save_model would write the whole model
    else:
        trainer.save_model(str(run_dir))  # adapter_config.json + adapter_model.safetensors (+ tokenizer)
    metrics = run_metrics(cfg, model, trainer, out, seconds, history)
    if not trainer.is_world_process_zero():  # under torchrun/accelerate: one process writes the run folder
        return TrainResult(trainer, model, tok, run_dir, history, metrics, cfg)
    tok.save_pretrained(str(run_dir))
    if cfg.test_file:
        metrics.update(evaluate_text_run(cfg, model, tok) if cfg.task == "cpt" else evaluate_run(cfg, model, tok, rewards))
    write_run_folder(cfg, model, run_dir, history, metrics)
    return TrainResult(trainer, model, tok, run_dir, history, metrics, cfg)


def starting_policy(cfg: TrainConfig) -> str | None:
    """The adapter folder the run starts from: cfg.init_adapter, or (task=grpo, warm_start_steps > 0) a short
    SFT run on train_file into output_dir/warm_start, trained here unless that folder already holds one."""
    if cfg.init_adapter or not cfg.warm_start_steps:
        return cfg.init_adapter
    folder = Path(cfg.output_dir) / "warm_start"
    if (folder / "adapter_config.json").is_file():
        print(f"ftlab: starting from the SFT warm start already in {folder} (delete it to train a new one)")
        return str(folder)
    print(f"ftlab: SFT warm start: {cfg.warm_start_steps} steps on the answers of {cfg.train_file}, so that "
          "sampled answers can earn a reward (from the base model every reward is 0: no signal)")
    train(dataclasses.replace(cfg, task="sft", max_steps=cfg.warm_start_steps, warm_start_steps=0,
                              output_dir=str(folder), eval_file=None, test_file=None, benchmark_tasks=None,
                              resume_from_checkpoint=None, reward_funcs=None, beta=None))
    gc.collect()
    return str(folder)


def stop_if_diverged(guard: NanGuard, cfg: TrainConfig) -> None:
    """Raise TrainingDiverged, naming the last good checkpoint, when the NaN guard stopped the run."""
    if not guard.tripped:
        return
    last = get_last_checkpoint(cfg.output_dir)
    where = f"{last}; resume with resume_from_checkpoint={last}" if last else f"none yet (save_steps={cfg.save_steps})"
    raise TrainingDiverged(f"{guard.message} Last good checkpoint: {where}.")


def final_eval(trainer, has_eval: bool) -> None:
    """The eval loss at the last step, unless a periodic evaluation already fell on it."""
    history = trainer.state.log_history
    last_eval = next((h["step"] for h in reversed(history) if "eval_loss" in h), None)
    if has_eval and last_eval != trainer.state.global_step:
        trainer.evaluate()


# ---------------------------------------------------------------- the trainer


def _checkpointing_args(config_class, on: bool) -> dict:
    """Activation checkpointing under the name this transformers reads.

    transformers 5.23 renamed `gradient_checkpointing*` to `activation_checkpointing*` and warns on the old
    names; the versions Unsloth pins (down to 5.17) know only the old ones."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def trainer_args(cfg: TrainConfig, precision: Precision):
    """SFTConfig / DPOConfig / KTOConfig / ORPOConfig / GRPOConfig from a resolved TrainConfig: same names,
    plus what ftlab decides."""
    from trl import DPOConfig, GRPOConfig, KTOConfig, SFTConfig

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
    beta = {} if cfg.beta is None else {"beta": cfg.beta}  # None: TRL's default (DPO, KTO, ORPO 0.1; GRPO 0.0)
    if cfg.task == "dpo":
        return DPOConfig(**common, **beta)
    if cfg.task == "kto":  # desirable and undesirable answers weigh the same: from pairs there are as many of each
        return KTOConfig(**common, **beta)
    if cfg.task == "orpo":
        orpo_config, _ = _orpo_classes()
        return orpo_config(**common, **beta)
    if cfg.task == "grpo":  # prompts only: no max_length; the answers are sampled, at most max_completion_length
        del common["max_length"]
        return GRPOConfig(**common, **beta, num_generations=cfg.num_generations, temperature=cfg.temperature,
                          max_completion_length=cfg.max_completion_length)
    # Length-grouped batches: LengthGroupedSampler reads the lengths of the tokenized rows (input_ids)
    packing = cfg.packing or cfg.task == "cpt"  # raw text is one stream: packed, wrapped so nothing is cut
    grouped = cfg.group_by_length and not packing
    common["train_sampling_strategy"] = "group_by_length" if grouped else "random"
    strategy = {"packing_strategy": "wrapped"} if cfg.task == "cpt" else {}
    # Data arrive tokenized with assistant masks (sft_example), so TRL's own masking options stay off.
    return SFTConfig(**common, packing=packing, **strategy, assistant_only_loss=False, completion_only_loss=None)


def _orpo_classes():
    """(ORPOConfig, ORPOTrainer): in trl.experimental.orpo since TRL PR #4480, at the top level before
    (preflight.has_orpo stops a run whose TRL has neither)."""
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        from trl import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


def build_trainer(cfg: TrainConfig, model, tokenizer, train_ds, eval_ds, callbacks, precision, rewards=()):
    """TRL's SFTTrainer, DPOTrainer, KTOTrainer, ORPOTrainer or GRPOTrainer (with `rewards`: checked reward
    functions), ready to train."""
    from trl import DPOTrainer, GRPOTrainer, KTOTrainer, SFTTrainer

    args = trainer_args(cfg, precision)
    callbacks = list(callbacks)
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.task == "dpo":
        # ref_model=None with a PeftModel: TRL computes the reference log-probs with the adapter disabled,
        # so the base model serves as reference without a second copy in memory
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    if cfg.task == "kto":  # the reference as for DPO: the adapter switched off
        return KTOTrainer(model=model, ref_model=None, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    if cfg.task == "orpo":  # no reference model at all: the odds ratio compares the policy with itself
        _, orpo_trainer = _orpo_classes()
        return orpo_trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            processing_class=tokenizer, callbacks=callbacks)
    if cfg.task == "grpo":
        # TRL's own generation (model.generate); with beta=0 no reference model, with beta>0 the PeftModel's
        # adapter-off weights (the starting policy) are the reference, as for DPO
        return GRPOTrainer(model=model, reward_funcs=list(rewards), args=args, train_dataset=train_ds,
                           eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=callbacks)



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


# ---------------------------------------------------------------- run metrics and the command line


def _last(history: list[dict], key: str):
    return next((h[key] for h in reversed(history) if key in h), None)


def _frozen_dtype(cfg: TrainConfig, model) -> str:
    """dtype of the weights that did not train ("nf4" for a 4-bit base; the trained ones for full)."""
    if cfg.method == "qlora":
        return "nf4"
    param = next((p for p in model.parameters() if not p.requires_grad), next(model.parameters()))
    return str(param.dtype).removeprefix("torch.")


def run_metrics(cfg, model, trainer, out, seconds, history) -> dict:
    trainable, total = trainable_parameters(model)
    tokens = trainer.state.num_input_tokens_seen or 0
    return {
        "method": cfg.method, "task": cfg.task, "base_model": cfg.model,
        "trainable_params": trainable, "total_params": total,
        "base_dtype": _frozen_dtype(cfg, model),
        "train_time_s": seconds, "steps": trainer.state.global_step,
        "tokens_per_s": tokens / max(out.metrics.get("train_runtime", seconds), 1e-9),
        "peak_memory_mb": peak_memory_mb(),
        "final_train_loss": _last(history, "loss"), "final_eval_loss": _last(history, "eval_loss"),
    }


def run_from_cli(config_path, overrides=()) -> Path:
    """`ftlab train CONFIG.yaml key=value ...`: train and print where the run folder is."""
    result = train(load_config(config_path, overrides))
    if not result.trainer.is_world_process_zero():  # under torchrun / accelerate launch: one summary line
        return result.run_dir
    m = result.metrics
    score = "\n".join(filter(None, [accuracy_line(m) or perplexity_line(m), m.get("unseen") and accuracy_line(m["unseen"])]))
    print(f"ftlab: run folder {result.run_dir} ({m['train_time_s']:.0f} s training); report: "
          f"{result.run_dir / 'finetune_report.md'}" + (f"\n{score}" if score else ""))
    return result.run_dir
