"""Word times from token times (fastasr.text.timestamps.word_times), for the char and SentencePiece tokenizers,
against word spans worked out by hand."""

from __future__ import annotations

from fastasr.text.timestamps import word_times
from fastasr.text.tokenizer import CharTokenizer, PieceDecoder


def test_char_tokens_to_words():
    tok = CharTokenizer(" абв")
    ids = tok.encode("аб ва")  # а б ␣ в а
    assert len(ids) == 5
    times = [0.0, 0.08, 0.16, 0.4, 0.56]
    assert word_times(tok, ids, times, 0.08) == [("аб", 0.0, 0.16), ("ва", 0.4, 0.64)]


def test_pieces_and_silent_tokens():
    # 0 blank, 1 <unk> (silent), 2 "▁при", 3 "вет", 4 "▁мир"
    tok = PieceDecoder(["<blank>", "<unk>", "▁при", "вет", "▁мир"], silent_ids=[0, 1])
    ids, times = [2, 1, 3, 4], [0.1, 0.2, 0.3, 0.9]
    assert tok.decode(ids) == "привет мир"
    assert word_times(tok, ids, times, 0.04) == [("привет", 0.1, 0.34), ("мир", 0.9, 0.94)]
    assert word_times(tok, [], [], 0.04) == []
