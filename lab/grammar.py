"""The synthetic language of the default run (lab/README.md): a probabilistic context-free grammar of
child-directed English with agreement, subcategorisation, recursion and attachment ambiguity, whose
probability of any sentence is exact (the inside algorithm sums over every derivation). It is the ground
truth against which lab/measures.py scores precision and recall; it is NOT the paper's data.

    python -m lab.grammar                        # samples, their exact log-probabilities, the entropy per word
    python -m lab.grammar --write out/babylm_synthetic --sentences 240000   # a corpus in the BabyLM layout

Shape legend: S sentences, n words, m spans of one width, N nonterminals, K binary rules.
"""
import argparse
import json
import math
import os
import re
import shutil
from collections import defaultdict

import numpy as np

# Upper-case symbols are nonterminals, everything else a word. Probabilities of one left side sum to 1.
# Zipf-like weights give the distribution many modes of different heights.
GRAMMAR = """
S    -> CL .  0.40 | i think that CL .  0.04 | mommy says CL .  0.04 | is NPs ADJ ?  0.07 | are NPp ADJ ?  0.06
      | does NPs Vtp NP ?  0.06 | do NPp Vtp NP ?  0.05 | where is NPs ?  0.06 | where are NPp ?  0.04
      | look at NP !  0.06 | INTJ !  0.08 | CL , okay ?  0.04
CL   -> NPs VPs  0.55 | NPp VPp  0.45
NP   -> NPs  0.55 | NPp  0.45
NPs  -> DETs Ns  0.50 | DETs ADJP Ns  0.18 | NAME  0.16 | NPs PP  0.08 | NPs that VPs  0.08
NPp  -> DETp Np  0.45 | DETp ADJP Np  0.15 | Np  0.20 | NPp PP  0.10 | NPp that VPp  0.10
ADJP -> ADJ  0.85 | ADJ ADJP  0.15
PP   -> P NP  1.0
VPs  -> Vis  0.28 | Vis PP  0.08 | Vts NP  0.36 | Vts NP PP  0.08 | is ADJ  0.14 | is not ADJ  0.06
VPp  -> Vip  0.28 | Vip PP  0.08 | Vtp NP  0.36 | Vtp NP PP  0.08 | are ADJ  0.14 | are not ADJ  0.06
INTJ -> uh oh  0.3 | good job  0.25 | all done  0.2 | wow  0.15 | yay  0.1
DETs -> the  0.45 | a  0.25 | my  0.1 | your  0.08 | this  0.07 | that  0.05
DETp -> the  0.45 | my  0.12 | your  0.1 | these  0.12 | those  0.08 | some  0.13
Ns   -> dog  0.16 | cat  0.13 | ball  0.12 | baby  0.1 | book  0.08 | bird  0.08 | truck  0.07 | cookie  0.07
      | duck  0.06 | spoon  0.05 | bunny  0.04 | cup  0.04
Np   -> dogs  0.16 | cats  0.13 | balls  0.12 | babies  0.1 | books  0.08 | birds  0.08 | trucks  0.07
      | cookies  0.07 | ducks  0.06 | spoons  0.05 | bunnies  0.04 | cups  0.04
NAME -> mommy  0.35 | daddy  0.3 | grandma  0.2 | teddy  0.15
ADJ  -> big  0.2 | little  0.18 | red  0.14 | happy  0.12 | sleepy  0.1 | funny  0.08 | hungry  0.08
      | blue  0.06 | soft  0.04
Vis  -> runs  0.22 | sleeps  0.2 | jumps  0.17 | cries  0.15 | sings  0.14 | falls  0.12
Vip  -> run  0.22 | sleep  0.2 | jump  0.17 | cry  0.15 | sing  0.14 | fall  0.12
Vts  -> sees  0.2 | likes  0.18 | wants  0.17 | has  0.15 | finds  0.12 | eats  0.1 | pushes  0.08
Vtp  -> see  0.2 | like  0.18 | want  0.17 | have  0.15 | find  0.12 | eat  0.1 | push  0.08
P    -> on  0.3 | in  0.25 | with  0.2 | under  0.15 | near  0.1
"""
PUNCT = ".?!,"


def parse_rules(text: str) -> dict:
    """{lhs: [(rhs tuple, prob)]} from GRAMMAR's notation, checked: every left side's probabilities sum
    to 1 and every nonterminal used is defined."""
    rules = {}
    for line in re.sub(r"\n\s+\|", " |", text.strip()).splitlines():
        lhs, rest = (s.strip() for s in line.split("->"))
        for alt in rest.split("|"):
            *rhs, p = alt.split()
            rules.setdefault(lhs, []).append((tuple(rhs), float(p)))
    for lhs, alts in rules.items():
        if abs(sum(p for _, p in alts) - 1) > 1e-9:
            raise ValueError(f"grammar: the rules of {lhs} sum to {sum(p for _, p in alts)}, not 1")
        for rhs, _ in alts:
            for sym in rhs:
                if sym[0].isupper() and sym not in rules:
                    raise ValueError(f"grammar: {sym} is used by {lhs} but never defined")
    return rules


def words(sentence: str) -> list:
    """A sentence string -> its words, punctuation split off ("the dog runs." -> the, dog, runs, .)."""
    return re.findall(rf"[^\s{re.escape(PUNCT)}]+|[{re.escape(PUNCT)}]", sentence)


def detokenize(ws) -> str:
    """Words -> the corpus's text: spaces between words, none before punctuation."""
    return re.sub(rf" ([{re.escape(PUNCT)}])", r"\1", " ".join(ws))


class PCFG:
    """Sampling with the derivation's probability, and exact string probabilities by the inside algorithm
    on the grammar compiled to binary, lexical and unary rules (unary chains folded into one matrix)."""

    def __init__(self, text: str = GRAMMAR, start: str = "S"):
        self.rules, self.start = parse_rules(text), start
        self._compile()
        self._cumulative = {lhs: (np.cumsum([p for _, p in alts]), [rhs for rhs, _ in alts])
                            for lhs, alts in self.rules.items()}

    def _compile(self):
        binary, lexical, unary = [], defaultdict(list), []  # (A, B, C, p), word -> [(A, p)], (A, B, p)
        names = list(self.rules)
        index = {a: i for i, a in enumerate(names)}

        def nt(name):
            if name not in index:
                index[name] = len(names)
                names.append(name)
            return index[name]

        for lhs, alts in self.rules.items():
            for k, (rhs, p) in enumerate(alts):
                if len(rhs) == 1:
                    (unary.append((index[lhs], nt(rhs[0]), p)) if rhs[0][0].isupper()
                     else lexical[rhs[0]].append((index[lhs], p)))
                    continue
                syms = []
                for s in rhs:  # a word inside a longer right side gets a preterminal of its own
                    if not s[0].isupper():
                        pre = nt(f"'{s}'")
                        if (pre, 1.0) not in lexical[s]:
                            lexical[s].append((pre, 1.0))
                        s = f"'{s}'"
                    syms.append(nt(s))
                head = index[lhs]
                for j in range(len(syms) - 2):  # A -> X1 X2 X3 ... as A -> X1 A~1, A~1 -> X2 A~2, ...
                    rest = nt(f"{lhs}~{k}.{j}")
                    binary.append((head, syms[j], rest, p if j == 0 else 1.0))
                    head = rest
                binary.append((head, syms[-2], syms[-1], p if len(syms) == 2 else 1.0))
        N = len(names)
        self.names, self.N = names, N
        self.bin_a, self.bin_b, self.bin_c = (np.array([r[i] for r in binary]) for i in range(3))
        self.bin_p = np.array([r[3] for r in binary])
        self.bin_onehot = np.zeros((len(binary), N))  # (K, N): rule k adds to its left side
        self.bin_onehot[np.arange(len(binary)), self.bin_a] = 1.0
        self.lexical = {}
        for w, entries in lexical.items():
            v = np.zeros(N)
            for a, p in entries:
                v[a] += p
            self.lexical[w] = v
        U = np.zeros((N, N))  # unary A -> B; closure (I - U)^-1 sums every chain A -> ... -> B
        for a, b, p in unary:
            U[a, b] += p
        self.unary_closure = np.linalg.inv(np.eye(N) - U)
        self.unary_counts = np.linalg.inv(np.eye(N) - (U > 0))  # chains counted, not weighed
        self.vocabulary = sorted(w for w in self.lexical if w != "")

    # ---- sampling ------------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, n: int, max_words: int = 200) -> list:
        """n sentences as (words, log-probability of the derivation that produced them)."""
        out = []
        while len(out) < n:
            ws, logp, stack = [], 0.0, [self.start]
            while stack and len(ws) <= max_words:
                sym = stack.pop()
                if not sym[0].isupper():
                    ws.append(sym)
                    continue
                cum, alts = self._cumulative[sym]
                k = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(alts) - 1)
                logp += math.log(self.rules[sym][k][1])
                stack.extend(reversed(alts[k]))
            if len(ws) <= max_words:
                out.append((ws, logp))
        return out

    # ---- exact probabilities -------------------------------------------------------------------------------

    def logprob(self, sentences: list) -> np.ndarray:
        """log p(sentence) summed over all derivations (the inside algorithm), -inf for what the grammar
        cannot produce. `sentences` are word lists or strings; sentences of one length run as one batch."""
        sents = [words(s) if isinstance(s, str) else list(s) for s in sentences]
        out = np.full(len(sents), -np.inf)
        by_len = defaultdict(list)
        for i, s in enumerate(sents):
            if s and all(w in self.lexical for w in s):
                by_len[len(s)].append(i)
        for n, idx in by_len.items():
            step = max(1, (1 << 22) // ((n + 1) ** 2 * self.N))  # bounds the chart at ~32 MB
            for lo in range(0, len(idx), step):
                batch = idx[lo:lo + step]
                p = self._inside([sents[i] for i in batch])
                with np.errstate(divide="ignore"):
                    out[batch] = np.log(p)
        return out

    def count_parses(self, sentences: list) -> np.ndarray:
        """The number of derivations of each sentence: the inside algorithm with every weight set to 1."""
        return np.array([self._inside([words(s) if isinstance(s, str) else list(s)], counts=True)[0]
                         if all(w in self.lexical for w in (words(s) if isinstance(s, str) else s)) else 0.0
                         for s in sentences])

    def _inside(self, batch: list, counts: bool = False) -> np.ndarray:
        """P(S =>* w) for S same-length word lists. chart[:, i, j] holds the inside probabilities (S, N) of
        span [i, j) for every nonterminal, with unary chains applied. counts=True counts derivations."""
        S, n, N = len(batch), len(batch[0]), self.N
        closure = self.unary_counts if counts else self.unary_closure
        rule_p = np.ones_like(self.bin_p) if counts else self.bin_p
        chart = np.zeros((S, n + 1, n + 1, N))
        lex = np.stack([[self.lexical[w] > 0 if counts else self.lexical[w] for w in s] for s in batch])  # (S, n, N)
        ar = np.arange(n)
        chart[:, ar, ar + 1] = lex @ closure.T
        for w in range(2, n + 1):
            m = n - w + 1
            starts = np.arange(m)
            acc = np.zeros((S, m, len(self.bin_p)))  # (S, m, K)
            for d in range(1, w):
                left = chart[:, starts, starts + d]  # (S, m, N)
                right = chart[:, starts + d, starts + w]
                acc += left[..., self.bin_b] * right[..., self.bin_c]
            chart[:, starts, starts + w] = ((acc * rule_p) @ self.bin_onehot) @ closure.T  # (S, m, N)
        return chart[:, 0, n, self.names.index(self.start)]

    def derivation_entropy(self) -> tuple:
        """Exact (entropy of the derivation, expected words) per sentence, from the expected number of times
        each nonterminal is expanded, c = e_S (I - M)^-1 with M[A, B] = E[# of B in one expansion of A].
        The string entropy is at most the derivation entropy, equal for an unambiguous grammar."""
        nts = list(self.rules)
        idx = {a: i for i, a in enumerate(nts)}
        M, h, w = np.zeros((len(nts), len(nts))), np.zeros(len(nts)), np.zeros(len(nts))
        for a, alts in self.rules.items():
            for rhs, p in alts:
                h[idx[a]] -= p * math.log(p)
                for sym in rhs:
                    if sym[0].isupper():
                        M[idx[a], idx[sym]] += p
                    else:
                        w[idx[a]] += p
        c = np.linalg.solve((np.eye(len(nts)) - M).T, np.eye(len(nts))[idx[self.start]])
        return float(c @ h), float(c @ w)

    def entropy_per_word(self, rng: np.random.Generator, n: int = 20000) -> tuple:
        """Monte Carlo estimate of the entropy rate, E[-log p(x)] / E[|x|] in nats per word (punctuation
        counts as a word), with a 95% interval from the delta method."""
        sents = [ws for ws, _ in self.sample(rng, n)]
        nll = -self.logprob(sents)
        lens = np.array([len(s) for s in sents], dtype=float)
        h = nll.sum() / lens.sum()
        resid = (nll - h * lens) / lens.mean()  # influence of each sentence on the ratio
        half = 1.96 * resid.std(ddof=1) / math.sqrt(n)
        return h, half


# ---------------------------------------------------------------------------------------------------------
# minimal pairs (BLiMP's jsonl fields): the good sentence comes from the grammar, the bad one breaks one rule


def minimal_pairs(rng: np.random.Generator, n: int) -> dict:
    """{paradigm uid: rows}: subject-verb agreement (plain, across a prepositional phrase, across a relative
    clause), determiner-noun agreement, transitivity and auxiliary agreement in questions. Every good
    sentence has a positive probability under GRAMMAR and every bad one probability 0 (tested)."""
    g = PCFG()
    lex = {lhs: [rhs[0] for rhs, _ in g.rules[lhs]] for lhs in ("Ns", "Np", "Vis", "Vip", "Vts", "Vtp", "P", "ADJ")}
    num = ({"N": "Ns", "Vi": "Vis", "Vt": "Vts", "det": ["this", "a"], "aux": "is"},
           {"N": "Np", "Vi": "Vip", "Vt": "Vtp", "det": ["these", "those"], "aux": "are"})

    def pick(cat):
        return int(rng.integers(len(lex[cat])))  # an index: Ns[i] and Np[i], Vis[i] and Vip[i] are one lemma

    def pair(a, b, frame):
        """frame(x, y) -> words, with x the grammatical number's choices and y the other's."""
        i = {k: pick(c) for k, c in (("n", "Ns"), ("n2", "Ns"), ("vi", "Vis"), ("vt", "Vts"), ("p", "P"),
                                     ("adj", "ADJ"))}
        return frame(a, b, i, True), frame(a, b, i, False)

    w = lambda cat, i: lex[cat][i]  # noqa: E731
    frames = {
        ("subject_verb_agreement", "syn_subject_verb"): lambda a, b, i, ok: [
            "the", w(a["N"], i["n"]), w((a if ok else b)["Vi"], i["vi"]), "."],
        ("subject_verb_agreement", "syn_agreement_across_pp"): lambda a, b, i, ok: [
            "the", w(a["N"], i["n"]), w("P", i["p"]), "the", w(b["N"], i["n2"]), w((a if ok else b)["Vi"], i["vi"]),
            "."],
        ("subject_verb_agreement", "syn_agreement_across_relative"): lambda a, b, i, ok: [
            "the", w(a["N"], i["n"]), "that", w(a["Vt"], i["vt"]), "the", w(b["N"], i["n2"]),
            w((a if ok else b)["Vi"], i["vi"]), "."],
        ("determiner_noun_agreement", "syn_determiner_noun"): lambda a, b, i, ok: [
            "look", "at", a["det"][i["n"] % 2], w((a if ok else b)["N"], i["n"]), "!"],
        ("argument_structure", "syn_transitivity"): lambda a, b, i, ok: [
            "the", w(a["N"], i["n"]), w(a["Vt"] if ok else a["Vi"], i["vt"] if ok else i["vi"]), "the",
            w(b["N"], i["n2"]), "."],
        ("subject_aux_inversion", "syn_question_aux"): lambda a, b, i, ok: [
            (a if ok else b)["aux"], "the", w(a["N"], i["n"]), w("ADJ", i["adj"]), "?"],
    }
    out = {}
    for (term, uid), frame in frames.items():
        rows = []
        for k in range(n):
            a, b = num if rng.random() < 0.5 else num[::-1]
            good, bad = pair(a, b, frame)
            rows.append({"sentence_good": detokenize(good), "sentence_bad": detokenize(bad), "field": "syntax",
                         "linguistics_term": term, "UID": uid, "pair_id": k})
        out[uid] = rows
    return out


# ---------------------------------------------------------------------------------------------------------
# a corpus in the BabyLM layout (data.py's "synthetic" layout) and minimal pairs in BLiMP's


def sentences(rng: np.random.Generator, n: int) -> list:
    return [detokenize(ws) for ws, _ in PCFG().sample(rng, n)]


def write_corpus(data_dir: str, seed: int = 0, n_train: int = 120_000, n_dev: int = 4_000, n_pairs: int = 500):
    """Writes train/synthetic.train, dev/synthetic.dev (one sentence a line, sampled from GRAMMAR) and
    evaluation_data/blimp_filtered/*.jsonl (minimal_pairs), atomically."""
    rng = np.random.default_rng(seed)
    tmp = data_dir.rstrip("/") + f".tmp{os.getpid()}"
    for folder, n in (("train", n_train), ("dev", n_dev)):
        os.makedirs(os.path.join(tmp, folder))
        with open(os.path.join(tmp, folder, f"synthetic.{folder}"), "w") as f:
            f.write("\n".join(sentences(rng, n)) + "\n")
    blimp = os.path.join(tmp, "evaluation_data", "blimp_filtered")
    os.makedirs(blimp)
    for uid, rows in minimal_pairs(rng, n_pairs).items():
        with open(os.path.join(blimp, f"{uid}.jsonl"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(data_dir)), exist_ok=True)
    os.replace(tmp, data_dir)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", default="", help="write a corpus (train, dev, minimal pairs) into this folder")
    p.add_argument("--sentences", type=int, default=120_000, help="--write: training sentences")
    a = p.parse_args(argv)
    if a.write:
        write_corpus(a.write, n_train=a.sentences)
        return print(f"{a.sentences:,} training sentences written to {a.write}")
    g, rng = PCFG(), np.random.default_rng(0)
    print(f"{len(g.rules)} nonterminals, {sum(map(len, g.rules.values()))} rules, {len(g.vocabulary)} words; "
          f"compiled to {g.N} nonterminals and {len(g.bin_p)} binary rules")
    samples = g.sample(rng, 10)
    for (ws, derivation), exact in zip(samples, g.logprob([ws for ws, _ in samples])):
        print(f"{exact:9.3f} (derivation {derivation:9.3f})  {detokenize(ws)}")
    h, half = g.entropy_per_word(rng, 20000)
    hd, length = g.derivation_entropy()
    print(f"entropy rate: {h:.4f} +- {half:.4f} nats per word (20000 samples); exact derivation entropy "
          f"{hd / length:.4f} per word (an upper bound), {length:.2f} words per sentence")


if __name__ == "__main__":
    main()
