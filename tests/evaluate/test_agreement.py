"""The paraphrase detector's second signal: numbers and words, on hand-made pairs."""

import pytest

from distill.evaluate.agreement import compare, confirms, normalize

ITEM = ("A bakery bakes 12 trays of muffins each morning, and each tray holds 24 muffins. "
        "How many muffins does it bake in one morning?")


@pytest.mark.parametrize("text, numbers", [
    ("twelve trays of twenty-four", ["12", "24"]),
    ("1,200 litres or 1200 litres or 1200.0 litres", ["1200", "1200", "1200"]),
    ("$2.50 and 2.5 dollars", ["2.5", "2.5"]),
    ("three hundred and fifty km, two dozen eggs, a hundred", ["350", "24", "100"]),
    ("1.5 million people, 3 thousand", ["1500000", "3000"]),
    ("the 3rd day, 25% off", ["3", "25"]),
    ("two, three", ["2", "3"]),
    ("which one is it", []),  # "one" is mostly a pronoun
])
def test_numbers_are_folded_to_one_form(text, numbers):
    assert [w for w in normalize(text) if w[0].isdigit()] == numbers


def test_symbols_become_words_in_the_order_of_spelt_out_text():
    assert normalize("$40") == normalize("40 dollars") == ["40", "dollar"]
    assert normalize("25%") == normalize("25 percent")


def agrees(text, cosine=0.9, item=ITEM):
    return confirms(compare(item, text), cosine, reworded_cosine=0.8,
                    reworded_max_similarity=0.5)


def test_rephrasings_that_keep_the_item_are_confirmed():
    spelt = ("A bakery bakes twelve trays of muffins each morning, and each tray holds "
             "twenty-four muffins. How many muffins does it bake in one morning?")
    moved = ("How many muffins does a bakery bake in one morning if each tray holds 24 "
             "muffins and it bakes 12 trays of muffins each morning?")
    context = "Sunrise Bakery is famous for its muffins. " + ITEM
    for text in (spelt, moved, context):
        assert agrees(text), compare(ITEM, text).describe()
    assert compare(ITEM, spelt).edit_similarity == 1.0


def test_look_alikes_with_other_numbers_or_another_quantity_are_not():
    other = ITEM.replace("12", "15")
    dropped = ITEM.replace("12 trays", "trays")
    extra = ITEM.replace("How many", "If it sells 30, how many")
    assert [compare(ITEM, t).numbers for t in (other, dropped, extra)] == [
        "different", "different", "added"]
    assert not any(agrees(t, cosine=0.99) for t in (other, dropped, extra))
    # Around a question without numbers, a date in a sentence of context is allowed.
    question = "Who wrote the novel Pride and Prejudice?"
    dated = "Pride and Prejudice was published in 1813. Who wrote the novel?"
    assert agrees(dated, item=question)


def test_another_question_with_the_same_words_is_not():
    item = "How many bones are there in the adult human body?"
    assert not agrees("What is the longest bone in the adult human body?", 0.95, item)
    assert agrees("Babies have more bones. How many bones are there in the adult human "
                  "body?", 0.95, item)  # comparison in context, not in the question
    celsius = "Write a function that converts a temperature from Celsius to Fahrenheit."
    swapped = "Write a function that converts a temperature from Fahrenheit to Celsius."
    evidence = compare(celsius, swapped)
    assert evidence.missing == [] and not evidence.in_order
    assert not agrees(swapped, 1.0, celsius)
    assert agrees("From Celsius to Fahrenheit, convert a temperature: write a function.",
                  0.97, celsius)  # reordered clauses, not a near copy


def test_a_rewording_needs_a_high_cosine_and_a_near_copy_with_a_swapped_word_never():
    item = "Who wrote the novel Pride and Prejudice?"
    reworded = "Which author is responsible for the book called Pride and Prejudice?"
    evidence = compare(item, reworded)
    assert evidence.missing == ["novel", "wrote"] and evidence.edit_similarity <= 0.5
    assert agrees(reworded, 0.85, item) and not agrees(reworded, 0.75, item)
    swapped = "Who illustrated the novel Pride and Prejudice?"
    assert compare(item, swapped).edit_similarity > 0.8
    assert not agrees(swapped, 0.99, item)
