"""measures.py: the positive control through distill.py's step, sequence scores against a per-token loop,
sampling cut at EOS, grammaticality of sampled token lists, and the bootstrap's intervals on known cases."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data as D
from lab import grammar as G
from lab import measures as MS
import model as M


def test_positive_control_reverse_kl_seeks_a_mode_forward_kl_covers_both():
    fw, rv = MS.positive_control("fw", seed=0), MS.positive_control("rv", seed=0)
    assert rv["precision"] > 0.9 and fw["precision"] < 0.7  # mass on the teacher's two modes
    assert rv["forward_kl"] > 2 * fw["forward_kl"]  # reverse KL gives up covering: lower recall
    assert rv["reverse_kl"] < fw["reverse_kl"]  # each objective wins on its own divergence


def test_bimodal_table_and_its_teacher():
    table = MS.bimodal_table(8, 0.4)
    p = table.exp()
    assert torch.allclose(p.sum(-1), torch.ones(8)) and p[3, 4] == pytest.approx(0.4) and p[3, 7] == pytest.approx(0.4)
    x = torch.tensor([[3, 5]])
    torch.testing.assert_close(MS.TableTeacher(table).head(MS.TableTeacher(table).hidden(x))[0], table[[3, 5]])


@pytest.fixture(scope="module")
def tok(syn):
    _, f = syn
    return D.prepare("synthetic", f["data_dir"], f["vocab_size"], f["work_dir"]).tokenizer


def test_sentence_logprobs_equal_a_per_token_loop_and_samples_end_at_eos(tok):
    m = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=3).eval()
    sents = MS.sample_sentences(m, 40, tok, torch.device("cpu"), seed=1, max_len=12)
    assert all(len(s) <= 12 and (s[-1] == tok.eos_id or len(s) == 12) for s in sents)
    assert all(tok.eos_id not in s[:-1] for s in sents)  # cut at the first EOS
    got = MS.sentence_logprobs(m, sents, tok, torch.device("cpu"))
    for s, g in zip(sents[:10], got[:10]):
        x = torch.tensor([[tok.bos_id] + s])
        with torch.no_grad():
            lp = F.log_softmax(m(x)[0].double(), -1)
        assert g == pytest.approx(sum(lp[j, s[j]].item() for j in range(len(s))), abs=1e-4)


def test_grammatical_needs_the_grammar_and_an_eos(tok):
    pcfg = G.PCFG()
    good = tok.encode("the dog runs.") + [tok.eos_id]
    bad = tok.encode("the dog run.") + [tok.eos_id]
    capped = tok.encode("the dog runs.")  # no EOS: the sample hit the length cap
    # never reached EOS, though its text without the last token is a grammatical sentence: still not grammatical
    unfinished = tok.encode("the dog runs.") + [tok.sp.piece_to_id(".")]
    ok, lp = MS.grammatical([good, bad, capped, unfinished], tok, pcfg)
    assert ok.tolist() == [True, False, False, False]
    assert lp[0] == pytest.approx(pcfg.logprob(["the dog runs."])[0])
    assert np.isneginf(lp[1:]).all()


def test_sequence_measures_against_per_token_scores_and_the_grammar(tok):
    pcfg, cpu = G.PCFG(), torch.device("cpu")
    teacher = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=1).eval()
    student = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=2).eval()
    ref = MS.reference_sets(teacher, tok, pcfg, cpu, n=12)
    items = MS.sequence_measures(student, teacher, tok, pcfg, ref, cpu, n=12, seed=3)

    def logq(model, ids):  # a per-token loop, independent of evaluate.sequence_logprobs
        with torch.no_grad():
            lp = F.log_softmax(model(torch.tensor([[tok.bos_id] + ids]))[0].double(), -1)
        return sum(lp[j, ids[j]].item() for j in range(len(ids)))
    for k, ids in enumerate(ref["true"][:4]):  # recall: [log p_true(x) - log q(x)] / |x| on grammar sentences
        p_true = pcfg.logprob([tok.decode(ids[:-1])])[0]
        assert items["recall_kl"][k] == pytest.approx((p_true - logq(student, ids)) / len(ids), abs=1e-4)
    for k, ids in enumerate(ref["teacher_samples"][:4]):  # forward KL: teacher samples, teacher minus student
        want = (logq(teacher, ids) - logq(student, ids)) / len(ids)
        assert items["forward_kl"][k] == pytest.approx(want, abs=1e-4)
    same = MS.sequence_measures(teacher, teacher, tok, pcfg, ref, cpu, n=12, seed=3)
    assert np.allclose(same["reverse_kl"], 0) and np.allclose(same["forward_kl"], 0)  # a model against itself


def test_reference_sets_are_computed_once_per_teacher_and_refused_on_mismatch(tok, tmp_path, monkeypatch):
    pcfg, cpu = G.PCFG(), torch.device("cpu")
    teacher = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=1).eval()
    path = str(tmp_path / "teacher" / "ckpt_best.pt")
    M.atomic_save({"model": teacher.state_dict()}, path)
    first = MS.cached_reference_sets(teacher, path, tok, pcfg, cpu, n=10)
    want = MS.reference_sets(teacher, tok, pcfg, cpu, n=10)
    for k in want:  # the stored sets are exactly the computed ones
        assert np.array_equal(np.asarray(first[k], dtype=object), np.asarray(want[k], dtype=object))
    files = os.listdir(tmp_path / "teacher" / "eval")
    assert len(files) == 1 and files[0].startswith("reference-") and files[0].endswith("-n10-s0.json")
    monkeypatch.setattr(MS, "reference_sets", lambda *a, **k: pytest.fail("recomputed"))
    again = MS.cached_reference_sets(teacher, path, tok, pcfg, cpu, n=10)
    assert np.array_equal(again["true_lp"], want["true_lp"]) and again["teacher_samples"] == want["teacher_samples"]
    stored = tmp_path / "teacher" / "eval" / files[0]
    saved = json.loads(stored.read_text())
    saved["key"]["tokenizer_sha"] = "another"
    stored.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="were made for .* delete it"):
        MS.cached_reference_sets(teacher, path, tok, pcfg, cpu, n=10)


def test_sequence_level_reverse_kl_and_entropy_against_a_per_token_loop(tok):
    """KL(q || p_T) on the student's own samples: [log q(x) - log p_T(x)] / |x|, and entropy -log q(x) / |x|."""
    cpu = torch.device("cpu")
    teacher = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=1).eval()
    student = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=2).eval()
    ref = {"teacher_samples": [[5, tok.eos_id]], "teacher_lp": np.zeros(1)}
    items = MS.sequence_measures(student, teacher, tok, None, ref, cpu, n=6, seed=4)
    sents = MS.sample_sentences(student, 6, tok, cpu, seed=4)  # the same draws

    def logq(model, ids):
        with torch.no_grad():
            lp = F.log_softmax(model(torch.tensor([[tok.bos_id] + ids]))[0].double(), -1)
        return sum(lp[j, ids[j]].item() for j in range(len(ids)))
    for k, ids in enumerate(sents):
        assert items["reverse_kl"][k] == pytest.approx((logq(student, ids) - logq(teacher, ids)) / len(ids), abs=1e-4)
        assert items["entropy"][k] == pytest.approx(-logq(student, ids) / len(ids), abs=1e-4)
