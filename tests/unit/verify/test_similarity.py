"""BLEU and ROUGE-L against hand-computed values (and NLTK where the definitions agree)."""

import math

import pytest

from mechunlearn.verify.similarity import bleu, ngram_counts, rouge, rouge_l, words

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_words_lowercase_and_split_punctuation():
    assert words(" Tokyo, Japan.\n\nThe") == ["tokyo", ",", "japan", ".", "the"]
    with pytest.raises(TypeError):
        words(None)


def test_ngram_counts():
    assert ngram_counts(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}


def test_bleu_by_hand():
    # p1 = 5/6; p2 = (3+1)/(5+1); p3 = (1+1)/(4+1); p4 = (0+1)/(3+1); equal lengths: no brevity penalty
    expected = (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert bleu(HYP, REF) == pytest.approx(expected)
    assert bleu(HYP, REF, smooth=False) == 0.0  # no 4-gram in common
    assert bleu(HYP, REF, max_order=2, smooth=False) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))


def test_bleu_brevity_penalty_and_clipping():
    # every n-gram of "the cat" matches; BP = exp(1 - 6/2)
    assert bleu("the cat", "the cat sat on the mat") == pytest.approx(math.exp(-2))
    # "the" clipped to its single occurrence in the reference: p1 = 1/4, p2 = 1/4, p3 = 1/3, p4 = 1/2
    assert bleu("the the the the", "the cat") == pytest.approx((1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25)


def test_bleu_edge_cases():
    assert bleu("Paris", "Paris") == 1.0  # identical short answers score exactly 1
    assert bleu(" Paris.\n\nThe answer", " Paris.\n\nThe answer") == 1.0
    assert bleu("Tokyo", "Paris") == 0.0
    assert bleu("", "") == 1.0 and bleu("", "Paris") == 0.0 and bleu("Paris", "") == 0.0
    assert bleu(["a", "b"], ["a", "b"]) == 1.0  # token lists are accepted
    with pytest.raises(ValueError):
        bleu("a", "a", max_order=0)


def test_bleu_agrees_with_nltk_for_sentences_of_four_words_or_more():
    nltk = pytest.importorskip("nltk.translate.bleu_score")
    smooth = nltk.SmoothingFunction().method2
    pairs = [
        (HYP, REF),
        ("Tokyo is the capital of Japan and its largest city", "Tokyo is the largest city of Japan"),
        ("a b c d e f", "a b c d e f g h"),
    ]
    for hyp, ref in pairs:
        theirs = nltk.sentence_bleu([words(ref)], words(hyp), smoothing_function=smooth)
        assert bleu(hyp, ref) == pytest.approx(theirs, rel=1e-9)


def test_rouge_l_by_hand():
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(6 / 7)  # P = 1, R = 3/4
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)  # LCS 3 of 4 both ways
    assert rouge_l("the cat sat", "the cat sat down", beta=2.0) == pytest.approx(5 * 0.75 / (0.75 + 4))
    assert rouge_l("x y", "a b") == 0.0
    assert rouge_l(HYP, HYP) == 1.0
    with pytest.raises(ValueError):
        rouge_l("a", "a", beta=0)
    with pytest.raises(TypeError):
        rouge_l(["a"], "a")


def test_rouge_follows_rouge_score_stemming_punctuation_and_empty_texts():
    # rouge-score drops punctuation and case: "Paris, France." is the two tokens paris france
    assert rouge_l("Paris, France.", "paris france") == 1.0
    # Porter stemming: "cats" -> "cat", "sitting" -> "sit"; "sat" stays: LCS "the cat" = 2 of 3
    assert rouge_l("the cats sat", "the cat sitting") == pytest.approx(2 / 3)
    # an empty text on either side scores 0, two empty texts too (rouge-score's convention)
    assert rouge_l("", "") == 0.0 and rouge_l("a", "") == 0.0


def test_rouge_recall_is_the_share_of_the_ground_truth_recovered():
    # TOFU's ROUGE-L recall: LCS / |ground truth|; generation "Paris is the capital", truth "Paris"
    got = rouge("Paris is the capital", "Paris")
    assert got["rougeL_recall"] == 1.0 and got["rouge1_recall"] == 1.0
    assert got["rougeL_f1"] == pytest.approx(2 * 0.25 * 1 / 1.25)  # P = 1/4, R = 1
    # truth "born in lyon france" (4 tokens), generation "she was born in paris": LCS "born in" = 2
    assert rouge("she was born in paris", "born in lyon france")["rougeL_recall"] == pytest.approx(0.5)
