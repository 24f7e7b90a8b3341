import pytest
from pydantic import ValidationError

from distill.filters.base import FilterContext
from distill.filters.heuristics import ALPACA_BLACKLIST, Config
from distill.records import Example, Lineage

GOOD = "Explain why the sky is blue."


def judge(instruction=GOOD, output="Because of Rayleigh scattering.", input="", lineage=None,
          **config):
    flt = Config(**config).build(FilterContext())
    record = Example(id="r", instruction=instruction, input=input, output=output,
                     lineage=lineage or Lineage())
    [verdict] = flt([record])
    return verdict


def reason(*args, **kwargs):
    verdict = judge(*args, **kwargs)
    assert verdict.keep == (verdict.reason == "")
    return verdict.reason


def test_a_good_record_is_kept_with_its_word_counts():
    verdict = judge()
    assert verdict.keep and verdict.reason == ""
    assert verdict.scores == {"instruction_words": 6, "output_words": 4}


def test_word_bounds_follow_self_instruct():
    # Self-Instruct: drop <= 3 words or > 150 words.
    assert reason("Name three fruits") == "too_short"
    assert reason("Name three fruits, please.") == ""
    assert reason("Name four fruits please") == ""
    assert reason(" ".join(["word"] * 150)) == ""
    assert reason(" ".join(["word"] * 151)) == "too_long"
    assert reason("Summarize", min_instruction_words=None) == ""
    assert reason(" ".join(["word"] * 151), max_instruction_words=None) == ""
    assert reason("Name three fruits", min_instruction_words=3) == ""
    assert reason("one two three four five six", max_instruction_words=5) == "too_long"


@pytest.mark.parametrize("text, word", [
    ("Describe the image below in detail.", "image"),
    ("Describe these IMAGES in detail please.", "images"),
    ("Draw a cat using ASCII characters.", "draw"),
    ("Plot the function y = x^2 for me.", "plot"),
    ("Tell me how to go to the station.", "go to"),
    ("Summarize the attached audio recording briefly.", "audio"),
    ("Create a flowchart of the hiring process.", "flowchart"),
    ("Describe the music in this video clip.", "video"),  # first in list order wins
    ("Open the file, then read the first line.", "file"),
])
def test_blacklisted_words_drop_the_instruction(text, word):
    assert reason(text) == f"blacklist:{word}"


@pytest.mark.parametrize("text", [
    "Describe the imagery in this short poem.",     # image inside a longer word
    "Update your profile with a short summary.",    # file inside profile
    "Explain what a graphical user interface is.",  # graph inside graphical
    "Write a story about a plotter who redraws roadmaps.",
])
def test_blacklist_matches_whole_words_only(text):
    assert reason(text) == ""


def test_blacklist_is_configurable():
    assert reason("Describe the image below in detail.", blacklist=[]) == ""
    assert reason("Describe the cat below in detail.", blacklist=["cat"]) == "blacklist:cat"
    assert "go to" in ALPACA_BLACKLIST and "diagram" in ALPACA_BLACKLIST
    with pytest.raises(ValidationError):
        Config(blacklist=[""])


def test_write_a_program_prefix():
    assert reason("Write a program that prints primes.") == "prefix:write a program"
    assert reason("write a program that prints primes.") == "prefix:write a program"
    assert reason("  Write a program that prints primes.") == "prefix:write a program"
    assert reason("Please write a program that prints primes.") == ""
    assert reason("Write a program that prints primes.", banned_prefixes=[]) == ""
    assert reason("Tell me a joke about cats.", banned_prefixes=["Tell me"]) == "prefix:tell me"


def test_punctuation_and_non_ascii_starts():
    assert reason('"Quote" the first line of the poem.') == "starts_with_punctuation"
    assert reason("- List three kinds of apples.") == "starts_with_punctuation"
    assert reason("¿Cómo se dice hello en inglés?") == "starts_with_non_ascii"
    assert reason("Écris une phrase en français.") == "starts_with_non_ascii"
    assert reason("   List three kinds of apples.") == ""  # leading spaces are not judged
    assert reason("- List three kinds of apples.", drop_punctuation_start=False) == ""
    assert reason("Écris une phrase en français.", drop_non_ascii_start=False) == ""


def test_empty_fields():
    assert reason("   ") == "empty_instruction"
    assert reason(output="") == "empty_output"
    assert reason(output=" \n ") == "empty_output"
    assert reason(output="", drop_empty_output=False) == ""


def test_input_equal_to_output():
    text = "The cat sat on the mat."
    assert reason(input=text, output=f" {text}\n") == "input_equals_output"
    assert reason(input=text, output="Le chat était assis sur le tapis.") == ""
    assert reason(input=text, output=text, drop_input_equals_output=False) == ""


def test_truncated_generations_are_dropped():
    assert reason(lineage=Lineage(finish_reason="length")) == "truncated_output"
    assert reason(lineage=Lineage(instruction_finish_reason="length")) == "truncated_instruction"
    assert reason(lineage=Lineage(finish_reason="stop", instruction_finish_reason="stop")) == ""
    assert reason(lineage=Lineage(finish_reason="length"), truncation_finish_reasons=[]) == ""
    # The lineage survives the JSON round trip the stages use.
    record = Example(id="r", instruction=GOOD, output="ok",
                     lineage=Lineage(finish_reason="length"))
    again = Example.from_json(record.to_json())
    [verdict] = Config().build(FilterContext())([again])
    assert verdict.reason == "truncated_output"


def test_output_length_bounds_are_off_by_default():
    long_output = " ".join(["word"] * 5000)
    assert reason(output=long_output) == ""
    assert reason(output="Yes.", min_output_words=2) == "output_too_short"
    assert reason(output=long_output, max_output_words=4999) == "output_too_long"
    assert reason(output=long_output, max_output_words=5000) == ""


def test_the_first_failing_rule_names_the_reason():
    # Too short and starting with punctuation: the word count is checked first.
    assert reason("- Draw it") == "too_short"
    assert reason("Write a program to draw an image.") == "blacklist:image"
    assert reason("Write a program to draw an image.", lineage=Lineage(finish_reason="length")) \
        == "truncated_output"


def test_unknown_keys_and_bad_bounds_are_errors():
    with pytest.raises(ValidationError):
        Config(min_words=3)
    with pytest.raises(ValidationError):
        Config(max_instruction_words=0)
    assert Config.model_validate({"kind": "heuristics"}).min_instruction_words == 4
