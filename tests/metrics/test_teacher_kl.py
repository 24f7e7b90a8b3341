"""The mean token KL to the teacher: zero for the teacher itself, the textbook sum otherwise."""

from __future__ import annotations

import pytest
import torch

from distill.metrics.perplexity import load_scorer
from distill.metrics.teacher_kl import answer_tokens, mean_token_kl, teacher_answers
from distill.microworld.tasks import generate_tasks


@pytest.fixture(scope="module")
def microworld():
    from distill.microworld.build import build_models

    paths = build_models()
    return {name: load_scorer(path, device="cpu") for name, path in paths.items()}


@pytest.fixture(scope="module")
def held_out(microworld):
    """Six microworld prompts with the teacher's greedy answers."""
    prompts = [task.to_example().prompt_text for task in generate_tasks(6, seed=123)]
    return teacher_answers(microworld["teacher"].model.name_or_path, prompts,
                           max_tokens=48, device="cpu")


def direct_kl(teacher, student, conversation) -> float:
    """KL(teacher || student) per answer token, from one unbatched forward of each model.

    The sequence is built by hand: the prompt with its generation prompt, then the
    answer's own tokens and the end-of-turn token; torch's kl_div sums over the vocabulary.
    """
    tokenizer = student.tokenizer
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    answer = tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[*prompt, *answer, tokenizer.eos_token_id]])
    with torch.no_grad():
        logits = [model.model(input_ids=ids).logits[0] for model in (teacher, student)]
    # positions len(prompt) - 1 ... predict the answer tokens and the end of turn
    window = slice(len(prompt) - 1, ids.shape[1] - 1)
    log_teacher, log_student = (torch.log_softmax(x[window].double(), -1) for x in logits)
    per_token = torch.nn.functional.kl_div(log_student, log_teacher, log_target=True,
                                           reduction="none").sum(-1)
    return float(per_token.mean())


def test_held_out_answers_are_the_teachers_greedy_ones(microworld, held_out):
    teacher = microworld["teacher"]
    chat = held_out[0][:-1]
    ids = teacher.tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = teacher.model.generate(**ids, do_sample=False, max_new_tokens=48)
    expected = teacher.tokenizer.decode(out[0, ids["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    assert held_out[0][-1] == {"role": "assistant", "content": expected}
    assert all(len(c) == 2 and c[-1]["content"] for c in held_out)


def test_a_model_is_at_zero_kl_from_itself(microworld, held_out):
    teacher = microworld["teacher"]
    assert mean_token_kl(teacher, teacher, held_out) == pytest.approx(0.0, abs=1e-6)


def test_the_raw_student_is_far_from_the_teacher(microworld, held_out):
    kl = mean_token_kl(microworld["teacher"], microworld["student"], held_out)
    assert kl > 0.1


def test_agrees_with_a_direct_computation(microworld, held_out):
    teacher, student = microworld["teacher"], microworld["student"]
    for conversation in held_out[:2]:
        expected = direct_kl(teacher, student, conversation)
        assert expected > 0
        assert mean_token_kl(teacher, student, [conversation]) == pytest.approx(expected,
                                                                                rel=1e-4)
        reverse = direct_kl(student, teacher, conversation)  # KL(student || teacher)
        assert abs(reverse - expected) > 0.01
        assert mean_token_kl(teacher, student, [conversation], direction="reverse") == \
            pytest.approx(reverse, rel=1e-4)


def test_pooled_over_tokens_and_independent_of_batching(microworld, held_out):
    teacher, student = microworld["teacher"], microworld["student"]
    alone = [(mean_token_kl(teacher, student, [c]),
              sum(answer_tokens(student.tokenizer, c, {student.tokenizer.eos_token_id})[1]))
             for c in held_out]
    pooled = sum(kl * n for kl, n in alone) / sum(n for _, n in alone)
    # right padding in mixed-length batches changes nothing
    for batch_size in (1, 4, 8):
        assert mean_token_kl(teacher, student, held_out, batch_size=batch_size) == \
            pytest.approx(pooled, rel=1e-4)


def test_only_the_final_answer_up_to_its_turn_end_is_scored(microworld):
    tokenizer = microworld["student"].tokenizer
    chat = [{"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3 plus 4?"},
            {"role": "assistant", "content": "7"}]
    ids, scored = answer_tokens(tokenizer, chat, {tokenizer.eos_token_id})
    # the template puts a newline after the turn end: the student never generates it
    assert tokenizer.decode([t for t, keep in zip(ids, scored, strict=True) if keep]) == \
        "7<|end|>"


def test_output_layers_of_different_sizes_are_refused(microworld, tmp_path):
    """One tokenizer, a vocabulary padded to another size (as Qwen2.5-7B's against 0.5B's)."""
    from transformers import AutoModelForCausalLM

    student = microworld["student"]
    padded = AutoModelForCausalLM.from_pretrained(student.model.name_or_path)
    padded.resize_token_embeddings(len(student.tokenizer) + 64)
    padded.save_pretrained(tmp_path / "padded")
    student.tokenizer.save_pretrained(tmp_path / "padded")
    chat = [{"role": "user", "content": "6 + 4"}, {"role": "assistant", "content": "10"}]
    with pytest.raises(ValueError, match="1024 output rows and the student .* 1088"):
        mean_token_kl(microworld["teacher"], tmp_path / "padded", [chat])


def test_models_with_different_tokenizers_are_refused(microworld, tiny_model_dir):
    other = load_scorer(tiny_model_dir, device="cpu")
    chat = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."}]
    with pytest.raises(ValueError, match="do not map the same strings to the same ids"):
        mean_token_kl(microworld["teacher"], other, [chat])
