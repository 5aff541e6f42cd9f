"""GGUF export: bad requests refused before anything is written; the trained run exported and read back.

The quick tests need no converter (a stand-in llama.cpp folder with the real layout's architecture
table); the slow ones fetch llama.cpp's converter from the llama-cpp-python sdist once (skipping, with
the reason, where PyPI cannot be reached) and export the session's trained run.
"""

import importlib.util
import json
import shutil
from collections import namedtuple

import pytest

from ftlab import DEFAULT_MODEL
from ftlab.cli import main
from ftlab.export import (
    LLAMA_CPP_PYTHON,
    QUANTS,
    export_gguf,
    fetch_converter,
    gguf_metadata,
    modelfile,
    supported_architectures,
)
from ftlab.generate import _ends_at

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
# Measured 2026-12-01 on a 2-core machine shared with 4 other test runs (load 7-15): 124 of 193 llama.cpp
# build steps in 49.5 min before the build was stopped, so a full build is over an hour there and at least
# ~25 min uncontended: more than the ~20 min CI has left of its 60.
NO_LLAMA_CPP = (f"llama-cpp-python is not installed: it has no wheel on PyPI, and building llama.cpp from its "
                f"sdist takes longer than CI's budget leaves; pip install 'ftlab[gguf]' (llama-cpp-python=="
                f"{LLAMA_CPP_PYTHON}) to run this test")


@pytest.fixture
def stand_in_converter(tmp_path, monkeypatch):
    """A llama.cpp folder with the converter's files in their real places and a two-entry architecture table."""
    root = tmp_path / "llama.cpp"
    (root / "conversion").mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text("raise SystemExit('a stand-in: never run')\n")
    (root / "conversion" / "__init__.py").write_text(
        'TEXT_MODEL_MAP: dict[str, str] = {\n    "LlamaForCausalLM": "llama",\n    "Qwen2ForCausalLM": "qwen",\n}\n')
    monkeypatch.setenv("FTLAB_LLAMA_CPP", str(root))
    return root


def fake_run(path, base=DEFAULT_MODEL):
    """A run folder as far as the up-front checks look: adapter_config.json and an adapter file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def test_unknown_quant_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown quant 'q3_k'.*f16, q8_0, q4_k_m"):
        export_gguf(fake_run(tmp_path / "run"), tmp_path / "m.gguf", quant="q3_k")
    assert main(["export", "--adapter", str(tmp_path / "run"), "--out", str(tmp_path / "m.gguf"),
                 "--quant", "q3_k"]) == 1
    assert "unknown quant 'q3_k'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]


def test_run_folder_without_adapter_names_the_fix(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no adapter in .*run.*Fix: pass the run folder `ftlab train` wrote"):
        export_gguf(tmp_path / "run", tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="does not end in .gguf.*Fix: --out .*m.gguf"):
        export_gguf(fake_run(tmp_path / "run"), tmp_path / "m.bin")


def test_missing_converter_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("FTLAB_LLAMA_CPP", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="converter is not in .*cache.*ftlab export --fetch-converter"):
        export_gguf(fake_run(tmp_path / "run"), tmp_path / "m.gguf")


def test_architecture_the_converter_lacks(tmp_path, stand_in_converter):
    base = tmp_path / "opt"  # a real transformers architecture that llama.cpp does not convert
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "opt", "architectures": ["OPTForCausalLM"]}))
    with pytest.raises(ValueError, match="does not support OPTForCausalLM.*Fix: a newer llama.cpp"):
        export_gguf(fake_run(tmp_path / "run", base=str(base)), tmp_path / "m.gguf")
    assert supported_architectures(stand_in_converter) == {"LlamaForCausalLM", "Qwen2ForCausalLM"}


@pytest.mark.skipif(HAS_LLAMA_CPP, reason="llama-cpp-python is installed: q4_k_m can be written")
def test_q4_k_m_without_llama_cpp_says_what_to_install(tmp_path, stand_in_converter):
    with pytest.raises(ImportError, match=r"q4_k_m needs llama.cpp's quantizer.*ftlab\[gguf\].*f16 / q8_0"):
        export_gguf(fake_run(tmp_path / "run"), tmp_path / "m.gguf", quant="q4_k_m")


def test_not_enough_disk_is_refused_up_front(tmp_path, stand_in_converter, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    # 134.5M parameters x (4 bytes of fp32 merge + 2 of f16 GGUF) = 0.81 GB
    with pytest.raises(OSError, match="not enough disk for a f16 export: it needs 0.81 GB"):
        export_gguf(fake_run(tmp_path / "run"), tmp_path / "out" / "m.gguf")
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_round_trip_leaves_no_gguf(tmp_path, stand_in_converter, monkeypatch):
    """A check that fails raises, names what changed, writes the report and no file at `out`, no temp folder."""
    import ftlab.export as export
    import ftlab.merge as merge

    monkeypatch.setattr(merge, "merge_adapter", lambda run, out, **kw: out.mkdir())
    monkeypatch.setattr(export, "convert", lambda merged, out, outtype, where: out.write_bytes(b"GGUF..."))
    monkeypatch.setattr(export, "_adapter_answers", lambda run, tok, rows: (["1999-01-02"], [True]))
    monkeypatch.setattr(export, "roundtrip", lambda *a: ({"passed": False, "answers": {"adapter": {}}},
                                                         ["eos_token_id changed: the GGUF has 0 vs 2"]))
    rows = [{"messages": [{"role": "user", "content": "2 Jan 1999"}, {"role": "assistant", "content": "1999-01-02"}]}]
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ValueError, match="does not answer like the adapter, so .*m.gguf was not written: eos_token_id"):
        export_gguf(fake_run(tmp_path / "run"), out, rows=rows)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.roundtrip.json"]
    assert json.loads((out.parent / "m.roundtrip.json").read_text())["passed"] is False


def test_modelfile_template_is_the_chat_template(tokenizer):
    text = modelfile(tokenizer, "dates.gguf")
    assert text.startswith("FROM ./dates.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    system = text.split('SYSTEM """')[1].split('"""')[0]
    # Ollama fills the placeholders; the result must be what training saw, default system prompt included
    chat = [{"role": "user", "content": "Rewrite 3 March 2021"}, {"role": "assistant", "content": "2021-03-03"}]
    filled = (template.replace("{{ .System }}", system).replace("{{ .Prompt }}", chat[0]["content"])
              .replace("{{ .Response }}", chat[1]["content"]))
    assert filled == tokenizer.apply_chat_template(chat, tokenize=False)
    assert "SmolLM" in system  # SmolLM2's template adds its own system prompt when a chat has none


def test_ends_at():
    assert _ends_at([5, 6, 2, 2, 2], eos=2, pad=2)  # stopped, then padded
    assert not _ends_at([5, 6, 7], eos=2, pad=2)  # ran to max_new_tokens
    assert not _ends_at([5, 2, 7], eos=2, pad=0)  # passed the token by and went on


def test_quant_table():
    assert list(QUANTS) == ["f16", "q8_0", "q4_k_m"]
    assert [q for q, (_, ftype, _) in QUANTS.items() if ftype is not None] == ["q4_k_m"]  # the C++ quantizer


# --- the real thing: the session's trained run, exported and read back ---------------------------------

@pytest.fixture(scope="module")
def converter():
    try:
        return fetch_converter()
    except Exception as err:  # noqa: BLE001 (no PyPI here: say so, as the browser test does without chromium)
        pytest.skip(f"llama.cpp's converter could not be fetched ({type(err).__name__}: {err})")


@pytest.mark.slow
def test_export_trained_run_f16(trained_run, converter, tmp_path):
    """f16 GGUF of the smoke run: template, eos/pad kept; transformers (and llama.cpp) answer like the adapter."""
    assert "LlamaForCausalLM" in supported_architectures(converter)
    out = tmp_path / "gguf" / "dates.gguf"
    result = export_gguf(trained_run.run_dir, out, quant="f16")
    print(result.summary(), json.dumps(result.roundtrip, indent=1))
    assert sorted(p.name for p in out.parent.iterdir()) == ["dates.Modelfile", "dates.gguf", "dates.roundtrip.json"]
    report = json.loads((out.parent / "dates.roundtrip.json").read_text())
    assert report["passed"] and report["problems"] == []
    meta = gguf_metadata(out)
    assert meta["eos_token_id"] == trained_run.tokenizer.eos_token_id == 2  # <|im_end|>
    assert meta["chat_template"] == trained_run.tokenizer.chat_template
    answers = report["answers"]
    n = report["n"]
    assert n == 16  # dates_smoke's test_limit
    for reader in ["transformers"] + (["llama.cpp"] if HAS_LLAMA_CPP else []):
        assert abs(answers[reader]["exact_match"] - answers["adapter"]["exact_match"]) <= 0.03
        assert answers[reader]["stopped"] == n  # every answer ends at <|im_end|>
        assert answers[reader]["same_as_adapter"] >= n - 1  # f16: measured 16/16 identical (transformers)
    assert result.size_bytes == pytest.approx(2 * 134.5e6 + 1e7, rel=0.1)  # f16 weights (+ vocab and metadata)


@pytest.mark.slow
def test_export_trained_run_q8_0(trained_run, converter, tmp_path):
    result = export_gguf(trained_run.run_dir, tmp_path / "dates.q8_0.gguf", quant="q8_0")
    assert result.roundtrip["passed"], result.roundtrip["problems"]
    assert result.size_bytes < 0.6 * 2 * 134.5e6  # about half of f16


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason=NO_LLAMA_CPP)
def test_export_q4_k_m_through_llama_cpp(trained_run, converter, tmp_path):
    """llama.cpp as the client: its quantizer writes q4_k_m, its runtime answers with the GGUF's own template."""
    result = export_gguf(trained_run.run_dir, tmp_path / "dates.q4_k_m.gguf", quant="q4_k_m")
    print(json.dumps(result.roundtrip, indent=1))
    assert "llama.cpp" in result.roundtrip["answers"]
    assert result.roundtrip["passed"], result.roundtrip["problems"]
