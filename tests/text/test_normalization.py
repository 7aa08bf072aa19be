import pytest

from fastasr.text.normalization import DEFAULT_TEXT, TextConfig, TextRejected, normalize
from fastasr.text.tokenizer import CharTokenizer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Привет, мир!", "привет мир"),
        ("ёлка и Ёж", "елка и еж"),
        ("кто-то где-нибудь", "ктото гденибудь"),
        ("да — нет", "да нет"),  # a dash is punctuation, not a hyphen
        ("  много   пробелов\tи\nстрок  ", "много пробелов и строк"),
        ("«цитата» (скобки)… точка.", "цитата скобки точка"),
        ("заме\u0301на", "замена"),  # stress mark dropped
        ("е\u0308ж", "еж"),  # decomposed ё is composed, then folded
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [("", "empty_text"), (" ,.!? ", "empty_text"), ("в 1999 году", "digits"), ("это ok", "latin"),
     ("мир ∑", "out_of_alphabet"), ("ελλάδα", "out_of_alphabet")],
)
def test_rejects(raw, reason):
    with pytest.raises(TextRejected) as err:
        normalize(raw)
    assert err.value.reason == reason


def test_options():
    assert normalize("в 1999 году", TextConfig(keep_digits=True)) == "в 1999 году"
    assert normalize("это OK", TextConfig(keep_latin=True)) == "это ok"
    assert normalize("ёж", TextConfig(fold_yo=False)) == "ёж"
    assert "ё" in TextConfig(fold_yo=False).alphabet and "ё" not in DEFAULT_TEXT.alphabet
    assert TextConfig.from_dict(TextConfig(keep_digits=True).to_dict()) == TextConfig(keep_digits=True)


def test_tokenizer_roundtrip():
    tok = CharTokenizer.from_index({"text": DEFAULT_TEXT.to_dict()})
    ids = tok.encode("привет мир")
    assert tok.blank == 0 and 0 not in ids and tok.decode([0, *ids, 0]) == "привет мир"
    assert tok.vocab_size == len(DEFAULT_TEXT.alphabet) + 1


def test_a_rejects_detail_names_the_words_as_written():
    with pytest.raises(TextRejected) as err:
        normalize("в 2024 году и 1999 и 12 и 7")
    assert err.value.detail == "2024 1999 12 …"  # not the sorted characters "012479"
    with pytest.raises(TextRejected) as err:
        normalize("это ok")
    assert err.value.detail == "ok"
