"""The `ftlab` command line: the notebooks' jobs, outside a notebook.

Each subcommand is a few lines that call the same public functions the notebooks use.
Exit code 0 on success; otherwise 1 (or 2 for bad arguments) with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys


def _doctor(args) -> None:
    from ftlab.doctor import summary

    print(summary(prepare=args.prepare))


def _data_check(args) -> None:
    from ftlab.data import check_file

    print(check_file(args.file, tokenizer=_tokenizer(args.tokenizer), max_length=args.max_length))


def _data_convert(args) -> None:
    from ftlab.data import convert_file

    result = convert_file(args.file, args.out, tokenizer=_tokenizer(args.tokenizer), max_length=args.max_length)
    print(result.summary())
    print(f"wrote {len(result.rows)} rows to {args.out} and {len(result.rejects)} rejects next to it")


def _tokenizer(name):
    if name is None:
        return None
    from ftlab import load_model

    return load_model(name, verbose=False)[1] if name == "default" else _auto_tokenizer(name)


def _auto_tokenizer(name):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _generate(args) -> None:
    from ftlab import chat, load_model

    model, tokenizer = load_model(args.model, load_in_4bit=args.load_in_4bit)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    reply = chat(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                 do_sample=args.sample, stream=args.stream)
    if not args.stream:
        print(reply)


def _train(args) -> None:
    from ftlab.training import run_from_cli

    run_from_cli(args.config, args.overrides)


def _estimate(args) -> None:
    from ftlab.estimation import estimate

    est = estimate(args.model, method=args.method, max_length=args.max_length,
                   per_device_train_batch_size=args.per_device_train_batch_size, gpu=args.gpu, r=args.r,
                   gradient_checkpointing=args.gradient_checkpointing)
    print(est.table())


def _merge(args) -> None:
    import torch

    from ftlab.merge import merge_adapter

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    result = merge_adapter(args.adapter, args.out, base=args.base, dtype=dtype)
    print(result.summary())


def _export(args) -> None:
    from ftlab.export import export_gguf, fetch_converter

    if args.fetch_converter:
        print(f"llama.cpp's converter: {fetch_converter()}")
        if args.adapter is None and args.out is None:
            return  # `ftlab export --fetch-converter` alone: fetch, export nothing
    if args.adapter is None or args.out is None:
        raise ValueError("ftlab export needs --adapter RUN and --out FILE.gguf (or --fetch-converter alone)")
    result = export_gguf(args.adapter, args.out, quant=args.quant, check=not args.no_check, limit=args.limit)
    print(result.summary())


def _eval(args) -> None:
    from ftlab.evaluation import run_eval_cli

    print(run_eval_cli(args.model, args.adapter, args.data, load_in_4bit=args.load_in_4bit, limit=args.limit,
                       max_new_tokens=args.max_new_tokens))


def build_parser() -> argparse.ArgumentParser:
    from ftlab.config import METHODS
    from ftlab.embedded import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="ftlab", description="Fine-tune LLMs: the course's jobs from a terminal.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="what this machine can do: GPU, bf16, libraries, embedded model")
    p.add_argument("--prepare", action="store_true", help="also build the embedded model into the HF cache")
    p.set_defaults(func=_doctor)

    data = sub.add_parser("data", help="check or convert a dataset file").add_subparsers(dest="data_command",
                                                                                        required=True)
    for name, func, help_ in [("check", _data_check, "detected format, counts, first reasons per kind"),
                              ("convert", _data_convert, "write converted rows and a rejects file")]:
        p = data.add_parser(name, help=help_)
        p.add_argument("file")
        if name == "convert":
            p.add_argument("--out", required=True, help="output JSONL; rejects go to OUT.rejects.jsonl")
        p.add_argument("--tokenizer", help="tokenizer for length checks ('default' = the embedded model)")
        p.add_argument("--max-length", type=int, help="reject rows longer than this many tokens")
        p.set_defaults(func=func)

    p = sub.add_parser("train", help="fine-tune from a YAML config; writes the run folder")
    p.add_argument("config", help="a shipped config's name (dates_lora, dates_smoke) or a path to a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the config's")
    p.set_defaults(func=_train)

    p = sub.add_parser("estimate", help="memory, time per step and disk: will it fit?")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub id, folder, config JSON or shipped shape name")
    p.add_argument("--method", default="lora", choices=METHODS)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--per-device-train-batch-size", "--batch-size", type=int, default=1,
                   dest="per_device_train_batch_size")
    p.add_argument("--gpu", default="cpu", help="cpu (this machine), T4, L4, A100-40, A100-80, H100")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_estimate)

    p = sub.add_parser("merge", help="merge an adapter into its base, with a fidelity check")
    p.add_argument("--adapter", required=True, help="run folder or adapter folder")
    p.add_argument("--out", required=True)
    p.add_argument("--base", help="base model (default: the adapter's own)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.set_defaults(func=_merge)

    p = sub.add_parser("export", help="merge, convert to GGUF for llama.cpp/Ollama, check the round trip")
    p.add_argument("--adapter", help="run folder (adapter + finetune_config.yaml)")
    p.add_argument("--out", help="FILE.gguf; FILE.Modelfile and FILE.roundtrip.json go beside it")
    p.add_argument("--quant", default="f16", help="f16 (default), q8_0, or q4_k_m (needs llama-cpp-python)")
    p.add_argument("--fetch-converter", action="store_true",
                   help="first download llama.cpp's converter (the llama-cpp-python sdist, once) if missing")
    p.add_argument("--no-check", action="store_true", help="skip the round trip against the adapter")
    p.add_argument("--limit", type=int, help="check on the first N test rows only")
    p.set_defaults(func=_export)

    p = sub.add_parser("eval", help="loss, perplexity and task metrics, base vs adapter")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--adapter")
    p.add_argument("--data", required=True)
    p.add_argument("--load-in-4bit", action="store_true")
    p.add_argument("--limit", type=int, help="first N rows only")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.set_defaults(func=_eval)

    p = sub.add_parser("generate", help="answer one prompt with a model (and an adapter)")
    p.add_argument("prompt")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--adapter", help="a run folder or adapter folder to apply")
    p.add_argument("--load-in-4bit", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--stream", action="store_true", help="print tokens as they come")
    p.set_defaults(func=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("ftlab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for users; --debug for the traceback
        if args.debug:
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"ftlab: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
