"""Chat models (issue 16): prompts as conversations through the tokenizer's own template, retries as
multi-turn conversations, training prompts without PI, and template parity between sampling and TRL's
conversational SFT. The tokenizer is SmolLM2-135M-Instruct's (ChatML), the real one; a copy with its
template removed stands for a base model, and a copy with a Qwen3-style `enable_thinking` switch checks
that template kwargs reach every side."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from attempt_factory import make_attempt
from transformers import AutoTokenizer

from domains import get_domain
from domains.pi import IN_CONVERSATION, PI_KINDS, first_messages, follow_up_messages, make_pi, pi_section
from experiments.config import ConfigError, load_config
from models.prompts import PromptParityError, PromptStyle, check_prompt_parity, prompt_ids, prompt_style, render
from tasks.filter import PILeak, assert_no_pi, decide, sft_examples
from tasks.keys import RoundKey
from tasks.train import trainer_examples

ARITH = get_domain("arith")
PROBLEM = ARITH.load("train", 1)[0]

# A Qwen3-style switch: with enable_thinking false the generation prompt, and the answer's turn when it is
# rendered, open with an empty think block.
_NO_THINK = "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
THINKING_SWITCH = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}" + _NO_THINK + "{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n" + _NO_THINK + "{% endif %}"
)


@pytest.fixture(scope="module")
def tok(smollm2: Path):
    return AutoTokenizer.from_pretrained(smollm2)


@pytest.fixture(scope="module")
def base_tok(tok):
    """The same vocabulary without a chat template: how a base model's tokenizer looks."""
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


def test_auto_prompts_a_model_with_a_template_as_chat_and_one_without_as_plain_text(tok, base_tok):
    assert prompt_style(tok, "auto") == PromptStyle(True, {})
    assert prompt_style(base_tok, "auto") == PromptStyle(False, {})
    assert prompt_style(tok, "off") == PromptStyle(False, {})
    with pytest.raises(ConfigError, match="model.chat=on but the tokenizer .* has no chat template"):
        prompt_style(base_tok, "on")
    with pytest.raises(ConfigError, match="chat_template_kwargs=.* prompted as plain text"):
        prompt_style(tok, "off", {"enable_thinking": False})
    # --smoke swaps a Qwen3 preset's model for the tiny base model: auto, and the kwargs go unused
    assert prompt_style(base_tok, "auto", {"enable_thinking": False}) == PromptStyle(False, {})


def test_a_first_try_is_one_user_turn_rendered_by_the_template_and_tokenized_as_the_template_does(tok):
    style = prompt_style(tok, "auto")
    text = render(tok, style, ARITH.prompt(PROBLEM), first_messages(ARITH, PROBLEM))
    assert text.count("<|im_start|>user\n") == 1 and text.endswith("<|im_start|>assistant\n")
    assert PROBLEM.question in text and "####" in text  # the answer format is asked for in the turn
    assert "Answer:" not in text  # no plain-text answer cue: the assistant header is the cue
    templated = tok.apply_chat_template(list(first_messages(ARITH, PROBLEM)), add_generation_prompt=True)
    assert prompt_ids(tok, text) == list(templated["input_ids"])  # no special token added twice
    plain = ARITH.prompt(PROBLEM)
    assert render(tok, PromptStyle(False), plain, first_messages(ARITH, PROBLEM)) == plain


@pytest.mark.parametrize("kind", [k for k in PI_KINDS if k != "skeleton"])
def test_a_retry_is_a_conversation_that_shows_the_failed_attempt_where_the_kind_is_about_it(tok, kind):
    failed = "7 * 2 = 15\n#### 15"
    pool = ARITH.load("train", 5)
    problem = replace_solution(PROBLEM)
    pi = make_pi(kind, ARITH, problem, pool, random.Random(0), completion=failed, feedback="final answer 15 is wrong")
    turns = follow_up_messages(ARITH, problem, pi, failed)
    text = render(tok, prompt_style(tok), ARITH.prompt(problem, pi), turns)
    if kind in IN_CONVERSATION:
        assert [t["role"] for t in turns] == ["user", "assistant", "user"]
        assert turns[1]["content"] == failed and f"<|im_start|>assistant\n{failed}<|im_end|>" in text
        assert turns[0] == first_messages(ARITH, problem)[0]  # the original question, unchanged
        assert "That is wrong." in turns[2]["content"]
    else:
        assert [t["role"] for t in turns] == ["user"] and failed not in text
        assert turns[0]["content"].endswith(pi_section(pi))
    assert text.endswith("<|im_start|>assistant\n")


def replace_solution(problem):
    from dataclasses import replace

    return replace(problem, solution=problem.solution or f"#### {problem.answer}")


def _retry_attempt(tok, kind: str):
    failed = "I think it is 15.\n#### 15"
    pi = make_pi(
        kind, ARITH, PROBLEM, [PROBLEM], random.Random(0), completion=failed, feedback="final answer 15 is wrong"
    )
    prompt = render(tok, prompt_style(tok), ARITH.prompt(PROBLEM, pi), follow_up_messages(ARITH, PROBLEM, pi, failed))
    return make_attempt(
        problem_id=PROBLEM.problem_id,
        attempt_id="retry-1",
        attempt_idx=1,
        completion=f"#### {PROBLEM.answer}",
        passed=True,
        status="pass",
        score=1.0,
        pi_kind=pi.kind,
        pi_text=pi.text,
        prompt=prompt,
    )


@pytest.mark.parametrize("kind", ["verifier_feedback", "correct_answer"])
def test_an_accepted_retry_trains_on_the_first_user_turn_alone_and_the_guard_sees_chat_pi(tok, kind):
    cfg = load_config("demo", ["model.chat=auto"])  # the preset prompts its tiny model as plain text
    retry = _retry_attempt(tok, kind)
    rows = decide(cfg, [retry])
    examples = sft_examples(cfg, RoundKey("r", "a", 0, 1, "/tmp"), {PROBLEM.problem_id: PROBLEM}, rows, tok)
    first_try = render(tok, prompt_style(tok), ARITH.prompt(PROBLEM), first_messages(ARITH, PROBLEM))
    assert examples[0]["prompt"] == first_try  # the first try's prompt exactly: markers, no PI, no scaffold
    assert "<|im_start|>user" in first_try and retry.pi_text not in first_try and "That is wrong" not in first_try
    assert_no_pi(examples, rows)
    with pytest.raises(PILeak, match="carries privileged information"):
        assert_no_pi([{**examples[0], "prompt": retry.prompt}], rows)  # the retry's own chat prompt


def test_conversational_sft_examples_see_the_sampled_prompt_tokens(tok):
    cfg = load_config("demo", ["model.chat=auto"])
    examples = [{"problem_id": PROBLEM.problem_id, "completion": "3 * 4 = 12\n#### 12"}]
    examples[0]["prompt"] = render(tok, prompt_style(tok), ARITH.prompt(PROBLEM), first_messages(ARITH, PROBLEM))
    trainer = trainer_examples(cfg, str(tok.name_or_path), examples, {PROBLEM.problem_id: PROBLEM})
    assert trainer[0]["messages"] == list(first_messages(ARITH, PROBLEM)) and "chat_template_kwargs" not in trainer[0]
    check_prompt_parity(tok, trainer)
    # a prompt sampled as plain text and trained as a conversation is the drift the check exists for
    with pytest.raises(PromptParityError, match="prompt/training token mismatch at token 0"):
        check_prompt_parity(tok, [{**trainer[0], "prompt": ARITH.prompt(PROBLEM)}])


def test_template_kwargs_render_sampling_and_training_alike(tok):
    t = copy.deepcopy(tok)
    t.chat_template = THINKING_SWITCH
    style = prompt_style(t, "on", {"enable_thinking": False})
    text = render(t, style, "", first_messages(ARITH, PROBLEM))
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    example = {
        "prompt": text,
        "messages": list(first_messages(ARITH, PROBLEM)),
        "completion": "#### 12",
        "chat_template_kwargs": {"enable_thinking": False},
    }
    check_prompt_parity(t, [example])
    with pytest.raises(PromptParityError):  # trained without the kwargs: no empty think block
        check_prompt_parity(t, [{**example, "chat_template_kwargs": {}}])


def test_code_domains_ask_a_chat_model_for_a_fenced_block_and_read_it_back(tok):
    mbpp = get_domain("mbpp")
    p = mbpp.load("test", 1)[0]
    turn = first_messages(mbpp, p)[0]["content"]
    assert "```python block" in turn and p.tests[0].strip() in turn and not turn.endswith("```python\n")
    entry = p.meta["entry_point"]
    reference = p.solution
    chatty = f"Here is the function:\n```python\n{reference}\n```\nIt passes the tests."
    assert mbpp.check(p, chatty).passed
    assert mbpp.chat_stop == () and "\n```" in mbpp.stop  # a chat turn is not cut at its own fence
    assert entry in reference


def test_a_self_diagnosis_question_continues_the_conversation_of_the_failed_attempt(tok):
    from domains.pi import diagnosis_messages

    failed = "2 * 7 = 15\n#### 15"
    turns = diagnosis_messages(ARITH, PROBLEM, failed)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"] and turns[1]["content"] == failed
    text = render(tok, prompt_style(tok), "", turns)
    assert text.endswith("what went wrong?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_on_for_a_base_model_fails_before_the_run(tmp_path):
    from tasks.runs import PreflightError, preflight

    with pytest.raises(PreflightError, match="model.chat=on but the tiny model is a base model"):
        preflight(load_config("demo", ["model.chat=on"]))
    folder = tmp_path / "base-model"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    with pytest.raises(PreflightError, match=f"model.chat=on but {folder} has no chat template"):
        preflight(load_config("demo", ["model.chat=on", f"model.name_or_path={folder}"]))
