import pytest

from ftlab.hardware import choose_backend, choose_precision


def test_t4_gets_fp16():
    p = choose_precision(cuda=True, cuda_bf16=False)
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (False, True, False)
    assert "fp16" in p.reason


def test_ampere_gets_bf16():
    p = choose_precision(cuda=True, cuda_bf16=True)
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (True, False, False)


def test_cpu_with_and_without_bf16():
    assert choose_precision(cuda=False, cpu_bf16=True).cpu_autocast_bf16
    plain = choose_precision(cuda=False, cpu_bf16=False)
    assert (plain.bf16, plain.fp16, plain.cpu_autocast_bf16) == (False, False, False)


def test_backend_choice_on_cpu():
    assert choose_backend("auto")[0] == "transformers"  # CI has no CUDA
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        choose_backend("unsloth")
    with pytest.raises(ValueError, match="backend="):
        choose_backend("vllm")
