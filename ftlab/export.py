"""Export a trained adapter as one GGUF file that llama.cpp and Ollama run, and check the round trip.

`export_gguf(run_dir, "dates.gguf", quant="q8_0")` merges the adapter in fp32 (ftlab.merge), converts the
merged folder with llama.cpp's own converter (convert_hf_to_gguf.py), quantizes where the converter
cannot (q4_k_m, through llama.cpp's quantizer in llama-cpp-python), and writes beside the GGUF an Ollama
`NAME.Modelfile` and `NAME.roundtrip.json`: the GGUF's chat template and eos/pad ids against the training
tokenizer's, and the GGUF loaded back (transformers `gguf_file=`, and llama.cpp where llama-cpp-python
is installed) answering the run's test prompts greedily against the adapter itself.

Why llama.cpp's converter and not a tensor-name table of our own: it is the reference writer of the
format llama.cpp reads (architecture keys, tokenizer pre-type, RoPE and norm settings), it is updated
with each architecture, and llama.cpp's loader rejects anything else it does not expect. It is not on
PyPI by itself; it comes from the llama-cpp-python sdist (`fetch_converter`), kept in ftlab's cache,
never in this repository, and run as a subprocess with the gguf-py it ships with.
Leaves out: LoRA-only GGUF adapters (convert_lora_to_gguf.py), imatrix quantization, multi-turn checks.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the release whose llama.cpp converts (its sdist) and runs (the package) our GGUFs
# quant name -> (the converter's --outtype, llama.cpp ftype for its quantizer or None, bytes per weight)
QUANTS = {
    "f16": ("f16", None, 2.0),        # lossless for weights merged in fp32 from a bf16/fp32 base, as far as greedy goes
    "q8_0": ("q8_0", None, 1.07),     # 8-bit blocks of 32 with one fp16 scale: the converter writes it itself
    "q4_k_m": ("f16", 15, 0.65),      # LLAMA_FTYPE_MOSTLY_Q4_K_M: needs llama.cpp's quantizer (C++), not the converter
}
MAX_EXACT_MATCH_DROP = 0.03  # the GGUF may answer at most 3 points of exact match below the adapter
MAX_NEW_TOKENS = 32  # room for a dates answer (~10 tokens) and its end-of-turn token: a run-on shows here
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")  # what the converter needs to run


@dataclass
class ExportResult:
    gguf: Path
    modelfile: Path
    quant: str
    size_bytes: int
    roundtrip: dict = field(default_factory=dict)  # what NAME.roundtrip.json holds

    def summary(self) -> str:
        """Two lines for `ftlab export`: where and how big, and what the round trip measured."""
        line = f"wrote {self.gguf} ({self.size_bytes / 1e6:.0f} MB, {self.quant}) and {self.modelfile.name}"
        if not self.roundtrip:
            return line + "\nround trip not checked (check=False)"
        em = ", ".join(f"{k} {v['exact_match']:.2f}" for k, v in self.roundtrip["answers"].items())
        return line + f"\ntemplate and eos/pad ids kept; exact match on {self.roundtrip['n']} test rows: {em}"


# --- llama.cpp's converter, from the llama-cpp-python sdist ------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftlab"


def converter_dir() -> Path | None:
    """The llama.cpp folder holding convert_hf_to_gguf.py: $FTLAB_LLAMA_CPP (a checkout), else ftlab's cache."""
    for where in (os.environ.get("FTLAB_LLAMA_CPP"), cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}"):
        if where and (Path(where) / "convert_hf_to_gguf.py").exists():
            return Path(where)
    return None


def fetch_converter() -> Path:
    """Download the llama-cpp-python sdist (~76 MB, PyPI) once and keep only its converter in ftlab's cache."""
    found = converter_dir()
    if found is not None:
        return found
    target = cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                              "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp],
                             capture_output=True, text=True)
        if got.returncode != 0:
            raise RuntimeError(f"could not download the llama-cpp-python {LLAMA_CPP_PYTHON} sdist with pip (no PyPI "
                               f"here?): {(got.stderr.strip().splitlines() or ['?'])[-1]}. Fix: run `ftlab export "
                               "--fetch-converter` where PyPI is reachable, or set FTLAB_LLAMA_CPP to a llama.cpp checkout")
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        part = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None, prefix=".llama.cpp-"))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(CONVERTER_FILES)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(part, members=members, filter="data")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)  # whole or not at all
    return target


def supported_architectures(llama_cpp: Path) -> set[str]:
    """The Hugging Face architectures (config.json 'architectures') this converter knows, read without running it."""
    tree = ast.parse((llama_cpp / "conversion" / "__init__.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if getattr(target, "id", None) == "TEXT_MODEL_MAP":
            return set(ast.literal_eval(node.value))
    raise RuntimeError(f"no TEXT_MODEL_MAP in {llama_cpp}/conversion/__init__.py: a llama.cpp layout this ftlab "
                       f"does not know. Fix: use the converter of llama-cpp-python {LLAMA_CPP_PYTHON} (unset FTLAB_LLAMA_CPP)")


def convert(merged_dir, out_file, outtype: str, llama_cpp: Path) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py on a transformers folder (its own gguf-py first on the path)."""
    cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(merged_dir), "--outfile", str(out_file),
           "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"llama.cpp's converter failed on {merged_dir} (exit {done.returncode}):\n{tail}")


def quantize(src, dst, ftype: int) -> None:
    """llama.cpp's own quantizer (llama_model_quantize, through llama-cpp-python): f16 GGUF -> `ftype`."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to ftype {ftype}")


# --- what the GGUF file says, and the Ollama Modelfile -----------------------------------------------

def gguf_metadata(path) -> dict:
    """{'chat_template': str | None, 'eos_token_id': int | None, 'pad_token_id': ..., 'bos_token_id': ...}."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key):
        f = fields.get(key)
        return None if f is None else f.parts[f.data[0]]

    template = value("tokenizer.chat_template")
    out = {"chat_template": None if template is None else bytes(template).decode("utf-8")}
    for name, key in [("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id"),
                      ("bos_token_id", "bos_token_id")]:
        v = value(f"tokenizer.ggml.{key}")
        out[name] = None if v is None else int(v[0])
    return out


def modelfile(tokenizer, gguf_name: str) -> str:
    """An Ollama Modelfile whose TEMPLATE is the tokenizer's own chat template rendered around placeholders.

    Ollama templates are Go templates, not Jinja, so the Jinja template is rendered once with markers for
    the system prompt, the user prompt and the answer, and the markers become {{ .System }}, {{ .Prompt }}
    and {{ .Response }}: exact for one system + one user turn, the shape of every training row here.
    """
    sys_, user, reply = "\x00SYSTEM\x00", "\x00PROMPT\x00", "\x00RESPONSE\x00"
    full = tokenizer.apply_chat_template([{"role": "system", "content": sys_}, {"role": "user", "content": user},
                                          {"role": "assistant", "content": reply}], tokenize=False)
    bare = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    before, after = full.split(sys_)
    default_system = bare.removeprefix(before).split(after.split(user)[0])[0] if bare.startswith(before) else ""
    template = full.replace(sys_, "{{ .System }}").replace(user, "{{ .Prompt }}").replace(reply, "{{ .Response }}")
    stops = [tokenizer.eos_token] + [t for t in tokenizer.all_special_tokens
                                     if t in after.split(reply)[-1] and t != tokenizer.eos_token]
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if default_system:  # the template's own default system prompt (SmolLM2 has one): what training saw
        lines.append(f'SYSTEM """{default_system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(stops)] + ["PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"


# --- the round trip: the GGUF read back, answering as the adapter did --------------------------------

def _answers_transformers(path, rows):
    """Greedy answers and stops of the GGUF loaded by transformers, with the tokenizer the file itself holds."""
    from transformers import AutoModelForCausalLM

    from ftlab.embedded import gguf_tokenizer
    from ftlab.generate import generate_with_stops
    from ftlab.tasks import prompts_and_references

    path = Path(path)
    tok = gguf_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32").eval()
    return generate_with_stops(model, tok, prompts_and_references(rows)[0], max_new_tokens=MAX_NEW_TOKENS)


def _answers_llama_cpp(path, rows):
    """Greedy answers of llama.cpp itself (llama-cpp-python), with the chat template stored in the GGUF."""
    from llama_cpp import Llama

    from ftlab.tasks import prompts_and_references

    llm = Llama(str(path), n_ctx=512, n_threads=os.cpu_count() or 1, seed=0, verbose=False,
                chat_format="chat_template.default")  # the GGUF's own template, never a built-in guess
    answers, stops = [], []
    for messages in prompts_and_references(rows)[0]:
        out = llm.create_chat_completion(messages, max_tokens=MAX_NEW_TOKENS, temperature=0.0)["choices"][0]
        answers.append(out["message"]["content"].strip())
        stops.append(out["finish_reason"] == "stop")  # "length": ran to max_tokens without the end-of-turn token
    return answers, stops


def roundtrip(path, tokenizer, rows, adapter_answers: list[str]) -> tuple[dict, list[str]]:
    """(report, problems): the GGUF's template and special ids vs `tokenizer`, and its greedy answers vs the adapter's."""
    import importlib.util

    from ftlab.tasks import exact_match, prompts_and_references

    refs = prompts_and_references(rows)[1]
    meta, problems = gguf_metadata(path), []
    expected = {"chat_template": tokenizer.chat_template, "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id}
    for key, want in expected.items():
        if meta[key] != want:
            shown = f"{len(meta[key] or '')} vs {len(want or '')} characters" if key == "chat_template" else \
                f"{meta[key]} vs {want}"
            problems.append(f"{key} changed: the GGUF has {shown} in the training tokenizer")

    def score(answers):
        return sum(exact_match(a, r) for a, r in zip(answers, refs)) / len(refs)

    report = {"n": len(rows), "metadata": {k: {"gguf": meta[k] if k != "chat_template" else meta[k] == expected[k],
                                                "tokenizer": expected[k] if k != "chat_template" else True}
                                            for k in expected},
              "answers": {"adapter": {"exact_match": score(adapter_answers)}}}
    readers = {"transformers": _answers_transformers}
    if importlib.util.find_spec("llama_cpp") is not None:
        readers["llama.cpp"] = _answers_llama_cpp
    else:
        report["llama.cpp"] = f"not checked: llama-cpp-python is not installed (pip install 'ftlab[gguf]')"
    for name, read in readers.items():
        answers, stops = read(path, rows)
        em = score(answers)
        report["answers"][name] = {"exact_match": em, "stopped": sum(stops),
                                   "same_as_adapter": sum(a == b for a, b in zip(answers, adapter_answers)),
                                   "samples": [{"reference": r, "adapter": a, "gguf": g}
                                               for r, a, g in list(zip(refs, adapter_answers, answers))[:3]]}
        if em < report["answers"]["adapter"]["exact_match"] - MAX_EXACT_MATCH_DROP:
            problems.append(f"exact match fell through {name}: {em:.2f} vs the adapter's "
                            f"{report['answers']['adapter']['exact_match']:.2f} on {len(rows)} test rows")
        if not all(stops):
            first = next(a for a, s in zip(answers, stops) if not s)
            problems.append(f"{len(stops) - sum(stops)} of {len(stops)} answers through {name} ran past "
                            f"{MAX_NEW_TOKENS} tokens without the end-of-turn token, e.g. {first[:60]!r}")
    report["passed"] = not problems
    report["problems"] = problems
    return report, problems


# --- export_gguf: the whole way, every bad input refused before anything is written -------------------

def _check_request(run_dir: Path, out: Path, quant: str) -> Path:
    """The converter's folder, once the request is sound; else the one-sentence reason and its fix."""
    import importlib.util

    from ftlab.merge import adapter_config

    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r}: choose one of {', '.join(QUANTS)} (f16: no loss, q8_0: half "
                         "the size, q4_k_m: a third, needs llama-cpp-python)")
    if out.suffix != ".gguf":
        raise ValueError(f"{out} does not end in .gguf: llama.cpp and Ollama find GGUF files by that suffix. "
                         f"Fix: --out {out.with_suffix('.gguf')}")
    if not (run_dir / "adapter_config.json").exists() or not (run_dir / "adapter_model.safetensors").exists():
        raise FileNotFoundError(f"no adapter in {run_dir} (adapter_config.json + adapter_model.safetensors). "
                                "Fix: pass the run folder `ftlab train` wrote, e.g. runs/dates_lora, after training")
    if QUANTS[quant][1] is not None and importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"{quant} needs llama.cpp's quantizer, which comes with llama-cpp-python: pip install "
                          "'ftlab[gguf]' (compiles llama.cpp), or export f16 / q8_0, which the converter writes alone")
    llama_cpp = converter_dir()
    if llama_cpp is None:
        raise FileNotFoundError(
            f"llama.cpp's converter is not in {cache_dir()}. Fix: ftlab export --fetch-converter (downloads the "
            f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist from PyPI once, keeps its convert_hf_to_gguf.py), or set "
            "FTLAB_LLAMA_CPP to a llama.cpp checkout")
    from transformers import AutoConfig

    arch = (AutoConfig.from_pretrained(adapter_config(run_dir)["base_model_name_or_path"]).architectures or ["?"])[0]
    if arch not in supported_architectures(llama_cpp):
        raise ValueError(f"llama.cpp's converter ({llama_cpp.name}) does not support {arch}: no GGUF for this "
                         "base. Fix: a newer llama.cpp (FTLAB_LLAMA_CPP=a checkout), or ship the merged folder "
                         "(ftlab merge) to a transformers/vLLM server instead")
    return llama_cpp


def _parameter_count(base: str) -> int:
    """Parameters of `base` (tied weights once), from its config on the meta device: nothing loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _test_rows(run_dir: Path, rows, limit):
    from ftlab.config import load_config
    from ftlab.evaluation import test_rows

    if rows is not None:
        return list(rows)[:limit]
    cfg_file = run_dir / "finetune_config.yaml"
    cfg = load_config(cfg_file) if cfg_file.exists() else None
    if cfg is None or not cfg.test_file:
        raise ValueError(f"{run_dir} names no test_file to check the export on. Fix: pass rows= (chat rows "
                         "with reference answers), or check=False to skip the round trip")
    return test_rows(cfg.test_file, limit or cfg.test_limit)


def _training_tokenizer(run_dir: Path):
    """The tokenizer the run trained with: saved in the run folder by the trainer, else its base's."""
    from transformers import AutoTokenizer

    from ftlab.merge import adapter_config

    has_own = (run_dir / "tokenizer_config.json").exists()
    return AutoTokenizer.from_pretrained(run_dir if has_own else adapter_config(run_dir)["base_model_name_or_path"])


def _adapter_answers(run_dir: Path, tokenizer, rows) -> tuple[list[str], list[bool]]:
    """The adapter's own greedy answers and stops on `rows` (fp32 base + PEFT): what the GGUF must keep."""
    import torch
    from peft import PeftModel

    from ftlab.generate import generate_with_stops
    from ftlab.merge import adapter_config
    from ftlab.models import load_model
    from ftlab.tasks import prompts_and_references

    base, _ = load_model(adapter_config(run_dir)["base_model_name_or_path"], dtype=torch.float32, verbose=False)
    model = PeftModel.from_pretrained(base, run_dir).eval()
    return generate_with_stops(model, tokenizer, prompts_and_references(rows)[0], max_new_tokens=MAX_NEW_TOKENS)


def export_gguf(run_dir, out, *, quant: str = "f16", check: bool = True, rows=None,
                limit: int | None = None) -> ExportResult:
    """Merge the adapter in `run_dir`, convert to GGUF `out` with llama.cpp's converter, quantize, check the round trip.

    quant: f16, q8_0 (both written by the converter) or q4_k_m (llama.cpp's quantizer, needs llama-cpp-python).
    check: compare the GGUF with the adapter on `rows` (default: the run's test_file, test_limit rows, or
        the first `limit`), write OUT.roundtrip.json, and raise naming what changed. Nothing is written at
        `out` unless the check passed: the file is built under a temporary name and renamed at the end.
    """
    import torch

    from ftlab.merge import adapter_config, check_disk, merge_adapter

    run_dir, out = Path(run_dir), Path(out)
    llama_cpp = _check_request(run_dir, out, quant)
    outtype, ftype, per_weight = QUANTS[quant]
    n = _parameter_count(adapter_config(run_dir)["base_model_name_or_path"])
    # beside `out` while it runs: the fp32 merged folder, the f16 GGUF the quantizer reads, the result
    need = int(n * (4 + (2 if ftype is not None else 0) + per_weight))
    out.parent.mkdir(parents=True, exist_ok=True)
    check_disk(out.parent, need, what=f"a {quant} export", fix="export to another folder, or a smaller quant")
    tokenizer = _training_tokenizer(run_dir)
    rows = _test_rows(run_dir, rows, limit) if check else None
    if check:
        adapter_answers, adapter_stops = _adapter_answers(run_dir, tokenizer, rows)
    report_file = out.with_suffix(".roundtrip.json")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}-export-") as work:
        work = Path(work)
        merge_adapter(run_dir, work / "merged", dtype=torch.float32, prompts=rows[:3] if rows else None)
        gguf = work / out.name
        convert(work / "merged", gguf if ftype is None else work / "f16.gguf", outtype, llama_cpp)
        if ftype is not None:
            quantize(work / "f16.gguf", gguf, ftype)
        report = {}
        if check:
            report, problems = roundtrip(gguf, tokenizer, rows, adapter_answers)
            report["answers"]["adapter"]["stopped"] = sum(adapter_stops)
            report |= {"quant": quant, "run": str(run_dir), "llama_cpp_python": LLAMA_CPP_PYTHON}
            report_file.write_text(json.dumps(report, indent=2))
            if problems:
                raise ValueError(f"the {quant} GGUF of {run_dir} does not answer like the adapter, so {out} was not "
                                 f"written: {'; '.join(problems)}. Fix: export f16 (or q8_0) first; details in "
                                 f"{report_file}")
        mf = out.with_suffix(".Modelfile")
        (work / mf.name).write_text(modelfile(tokenizer, out.name))
        os.replace(work / mf.name, mf)
        os.replace(gguf, out)  # last: a file at `out` is a finished, checked export
    return ExportResult(out, mf, quant, out.stat().st_size, report)
