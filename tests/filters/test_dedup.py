import pytest
from pydantic import ValidationError

from distill.filters.base import FilterContext
from distill.filters.dedup import Config, normalize
from distill.records import Example


@pytest.mark.parametrize("a, b", [
    ("Name three fruits.", "name  three fruits"),
    ("Hello,world", "hello world"),
    ("  Tabs\tand\nnewlines  ", "tabs and newlines"),
    ("“Smart” quotes — and dashes…", '"smart" quotes - and dashes...'),
    ("¿Qué tal?", "qué tal"),
    ("Ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC
    ("STRASSE", "straße"),  # case folding, not only lower()
    ("e\u0301", "\u00e9"),  # combining accent composes (NFKC)
])
def test_normalize_equates(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a, b", [
    ("2+2", "2-2"),  # "+" is a symbol and stays; "-" is punctuation
    ("cafe", "café"),
    ("New York", "NewYork"),
    ("a b", "a  c"),
])
def test_normalize_keeps_apart(a, b):
    assert normalize(a) != normalize(b)


def test_normalize_output():
    assert normalize("  Hello, World!  It's   me. ") == "hello world it s me"


def dedup(records, **config):
    return Config(**config).build(FilterContext())(records)


def ex(id, instruction, input="", output="out"):
    return Example(id=id, instruction=instruction, input=input, output=output)


def test_first_occurrence_is_kept_and_later_ones_point_to_it():
    records = [ex("a", "Name three fruits."), ex("b", "Name four fruits."),
               ex("c", "name three FRUITS"), ex("d", "Name three fruits!", output="other"),
               ex("e", "Name three fruits.", input="tropical")]
    verdicts = dedup(records)
    assert [v.keep for v in verdicts] == [True, True, False, False, True]
    assert verdicts[2].reason == "exact_duplicate"
    assert verdicts[2].scores == {"duplicate_of": "a"}
    assert verdicts[3].scores == {"duplicate_of": "a"}
    assert verdicts[0].scores == {}


def test_fields_are_configurable():
    records = [ex("a", "Sum 2 and 3.", output="5"), ex("b", "Sum 2 and 3.", output="Five")]
    assert [v.keep for v in dedup(records)] == [True, False]
    assert [v.keep for v in dedup(records, fields=["instruction", "input", "output"])] == \
        [True, True]
    assert [v.keep for v in dedup([ex("a", "x", output="Same!"), ex("b", "y", output="same")],
                                  fields=["output"])] == [True, False]


def test_config_rejects_unknown_fields_and_keys():
    with pytest.raises(ValidationError):
        Config(fields=["messages"])
    with pytest.raises(ValidationError):
        Config(fields=[])
    with pytest.raises(ValidationError):
        Config(normalise=True)
