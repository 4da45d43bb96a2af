"""grammar.py: exact probabilities against a hand-worked ambiguous grammar, the derivations that produced
the samples, sampled frequencies and parse counts; ungrammatical strings get probability 0."""
import math
from collections import Counter

import numpy as np
import pytest

from lab import grammar as G

TOY = """
S  -> NP VP  1.0
NP -> n  0.6 | NP PP  0.4
PP -> p NP  1.0
VP -> v NP  0.7 | VP PP  0.3
"""


@pytest.fixture(scope="module")
def g():
    return G.PCFG()


def test_inside_sums_both_attachments_of_a_hand_worked_sentence():
    toy = G.PCFG(TOY)
    # "n v n p n": the PP attaches to the object NP or to the VP
    object_np = 0.6 * 0.7 * (0.4 * 0.6 * 1.0 * 0.6)
    verb_phrase = 0.6 * 0.3 * (0.7 * 0.6) * (1.0 * 0.6)
    assert toy.logprob([["n", "v", "n", "p", "n"]])[0] == pytest.approx(math.log(object_np + verb_phrase), abs=1e-12)
    assert toy.count_parses([["n", "v", "n", "p", "n"]])[0] == 2
    assert toy.logprob([["n", "v", "n"]])[0] == pytest.approx(math.log(0.6 * 0.7 * 0.6), abs=1e-12)
    assert toy.logprob([["n", "n"], ["v"], ["n", "v", "x"]]).tolist() == [-np.inf] * 3


def test_sampled_sentences_score_their_derivation_or_more(g):
    samples = g.sample(np.random.default_rng(1), 400)
    exact = g.logprob([ws for ws, _ in samples])
    derivation = np.array([lp for _, lp in samples])
    parses = g.count_parses([ws for ws, _ in samples])
    assert (parses >= 1).all() and np.isfinite(exact).all()
    assert (exact >= derivation - 1e-9).all()  # the inside sum includes the derivation that was sampled
    one = parses == 1
    assert one.sum() > 300 and np.allclose(exact[one], derivation[one], atol=1e-9)
    assert (exact[~one] > derivation[~one] + 1e-6).any()  # ambiguity exists and adds probability


def test_frequent_sentences_appear_as_often_as_their_probability(g):
    n = 60_000
    counts = Counter(G.detokenize(ws) for ws, _ in g.sample(np.random.default_rng(2), n))
    top = [s for s, _ in counts.most_common(12)]
    p = np.exp(g.logprob(top))
    freq = np.array([counts[s] for s in top]) / n
    se = np.sqrt(p * (1 - p) / n)
    assert (np.abs(freq - p) < 4.5 * se).all(), list(zip(top, freq, p))


def test_ungrammatical_strings_get_probability_zero(g):
    bad = ["the dogs runs.", "the dog run.", "the dog sleeps the cat.", "these dog sees a ball.",
           "are the dog happy?", "the dog", "dog the runs.", "the zebra runs.", ""]
    assert np.isneginf(g.logprob(bad)).all()
    assert np.isfinite(g.logprob(["the dog runs.", "these dogs see a ball.", "is the dog happy?"])).all()


def test_every_minimal_pair_is_grammatical_against_ungrammatical(g):
    pairs = G.minimal_pairs(np.random.default_rng(3), 40)
    assert len(pairs) == 6
    for uid, rows in pairs.items():
        good = g.logprob([r["sentence_good"] for r in rows])
        bad = g.logprob([r["sentence_bad"] for r in rows])
        assert np.isfinite(good).all() and np.isneginf(bad).all(), uid
        assert len({r["sentence_good"] for r in rows}) > 5  # not one pair repeated


def test_entropy_rate_below_the_exact_derivation_entropy(g):
    h_deriv, length = g.derivation_entropy()
    toy = G.PCFG(TOY)
    toy_h, toy_len = toy.derivation_entropy()
    samples = toy.sample(np.random.default_rng(0), 40_000)
    assert np.mean([len(ws) for ws, _ in samples]) == pytest.approx(toy_len, rel=0.02)
    assert -np.mean([lp for _, lp in samples]) == pytest.approx(toy_h, rel=0.02)
    h, half = g.entropy_per_word(np.random.default_rng(4), 8000)
    assert h - half < h_deriv / length and h > 0.9 * h_deriv / length  # ambiguity costs a little
    rules = sum(len(a) for a in g.rules.values())
    assert rules > 100 and len(g.vocabulary) > 90
