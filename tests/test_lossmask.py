"""lossmask.py on the real SmolLM2 tokenizer: loss tokens are exactly the answers (+ <|im_end|>), pitfalls warned."""

import copy

import pytest

from ftlab.lossmask import loss_mask

CHAT = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like <b>the sky</b>."},
        {"role": "user", "content": "Another 😀?"}, {"role": "assistant", "content": " Green 😀 grass."}]


def loss_text(view) -> list[str]:
    return [t for t, loss in view.runs() if loss]


def variant(tokenizer, **attrs):
    tok = copy.deepcopy(tokenizer)  # never change the session fixture
    for k, v in attrs.items():
        setattr(tok, k, v)
    return tok


def test_loss_tokens_are_the_answers_plus_end_token(tokenizer):
    view = loss_mask(CHAT, tokenizer)
    assert loss_text(view) == ["Blue, like <b>the sky</b>.<|im_end|>", " Green 😀 grass.<|im_end|>"]
    assert view.input_ids == tokenizer.apply_chat_template(CHAT, return_dict=False)  # same tokens as training
    assert len(view.mask) == len(view.input_ids) and set(view.mask) == {0, 1}
    assert sum(view.mask) == len(tokenizer(loss_text(view)[0] + loss_text(view)[1],
                                           add_special_tokens=False)["input_ids"])


def test_generation_template_gives_the_same_mask(tokenizer):
    # SmolLM2's template with {% generation %} around each answer and its <|im_end|>: the library's own mask path
    template = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}{{ '<|im_start|>system\n"
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
                "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
                "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
                "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
                "{% endfor %}")
    tok = variant(tokenizer, chat_template=template)
    assert loss_mask(CHAT, tok).mask == loss_mask(CHAT, tokenizer).mask


def test_pad_equal_to_eos_is_warned_and_fix_silences_it(tokenizer):
    assert any("pad token == EOS" in w for w in loss_mask(CHAT, tokenizer).warnings)
    assert loss_mask(CHAT, variant(tokenizer, pad_token="<|endoftext|>")).warnings == []


def test_no_chat_template_warns_and_shows_chatml(tokenizer):
    view = loss_mask(CHAT, variant(tokenizer, chat_template=None))
    assert any("no chat template" in w for w in view.warnings)
    assert loss_text(view)[0] == "Blue, like <b>the sky</b>.<|im_end|>"


def test_template_without_end_token_is_warned(tokenizer):
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    view = loss_mask(CHAT, variant(tokenizer, chat_template=plain))
    # "assistant: Blue" tokenizes as ": " + " Blue": a token straddling the answer's start carries loss
    assert [t.strip() for t in loss_text(view)] == ["Blue, like <b>the sky</b>.", "Green 😀 grass."]
    assert sum("does not end with an end-of-turn" in w for w in view.warnings) == 2


@pytest.mark.parametrize("max_length, expected", [(30, "removes the whole answer"), (60, "cuts")])
def test_truncation_that_cuts_the_answer_is_warned(tokenizer, max_length, expected):
    full = loss_mask(CHAT, tokenizer)
    view = loss_mask(CHAT, tokenizer, max_length=max_length)
    assert len(view.input_ids) == max_length and view.input_ids == full.input_ids[:max_length]
    assert any(expected in w for w in view.warnings)
    assert not any("truncation" in w for w in loss_mask(CHAT, tokenizer, max_length=len(full.mask)).warnings)


def test_other_formats_and_views(tokenizer):
    alpaca = loss_mask({"instruction": "Add", "input": "2 and 2", "output": "4"}, tokenizer)
    assert loss_text(alpaca) == ["4<|im_end|>"]
    pref = loss_mask({"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}, tokenizer)
    assert loss_text(pref) == ["Blue.<|im_end|>"]  # preference rows show the chosen answer
    view = loss_mask(CHAT, tokenizer)
    text = view.text()
    assert "[[Blue, like <b>the sky</b>.<|im_end|>]]" in text and f"{sum(view.mask)} carry loss" in text
    page = view._repr_html_()
    assert "&lt;b&gt;the sky" in page and "<b>the" not in page and "pad token == EOS" in page
