"""evaluate.py: scores against hand computations, the tie rule, EWoK target tokens (made-up sentences, never
EWoK's), the metrics on hand-worked cases, a GLUE fine-tune, output files, and the real data's counts."""
import argparse
import gzip
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data as D
import evaluate as E
import glue as GL
from lab import measures as MS
import model as M
from conftest import EVAL_DIR


@pytest.fixture(scope="module")
def tok_model(syn, tmp_path_factory):
    """The BabyLM layouts' tokenizer (BPE, byte fallback) on the synthetic sentences: English beyond the
    grammar's words (EWoK, GLUE) must tokenize as on real data."""
    _, flags = syn
    path = str(tmp_path_factory.mktemp("bpe") / "bpe.model")
    D.train_tokenizer([os.path.join(flags["data_dir"], "train", "synthetic.train")], flags["vocab_size"], path)
    tok = D.Tokenizer(path)
    m = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=4).eval()
    return tok, m


def test_sequence_score_equals_hand_computed_log_prob_sum():
    m = M.build_model(M.get_config("debug"), seed=2).eval()
    seqs = [[1, 5, 9, 33, 7], [1, 8], [1, 400, 3, 3, 3, 3, 3, 2], [7, 7, 7]]
    starts = [1, 1, 3, 2]
    got = E.sequence_logprobs(m, seqs, starts, torch.device("cpu"), "fp32", batch_tokens=10)
    for s, i, g in zip(seqs, starts, got):
        with torch.no_grad():
            lp = F.log_softmax(m(torch.tensor([s]))[0].double(), -1)
        want = sum(lp[j - 1, s[j]].item() for j in range(i, len(s)))
        assert g == pytest.approx(want, abs=1e-4)


def test_ties_count_as_right_and_predictions_format(tok_model):
    tok, m = tok_model
    rows = [{"sentence_good": "The dog runs.", "sentence_bad": "The dog runs."},
            {"sentence_good": "The dogs run.", "sentence_bad": "Dogs the run."}]
    acc, items, preds = E.zero_shot(m, tok, {"blimp": {"toy": rows}}, torch.device("cpu"), "fp32")
    assert items["blimp"]["toy"][0] == "1"
    p = preds["blimp"]["toy"]["predictions"]
    assert [r["id"] for r in p] == ["toy_0", "toy_1"] and p[0]["pred"] == " The dog runs."
    seqs = [[tok.bos_id] + s for s in tok.encode([" The dogs run.", " Dogs the run."])]
    good, bad = E.sequence_logprobs(m, seqs, [1, 1], torch.device("cpu"), "fp32")  # scored independently
    assert items["blimp"]["toy"][1] == ("1" if good >= bad else "0")
    assert p[1]["pred"] == (" The dogs run." if good >= bad else " Dogs the run.")
    assert acc["blimp"]["toy"] == pytest.approx((1 + (good >= bad)) / 2)


def test_ewok_target_tokens_come_from_the_joint_encoding(tok_model):
    tok, _ = tok_model
    rows = [{"Context1": "The cup is on the table.", "Target1": "The cup is high.", "Target2": "The cup is low."},
            {"Context1": "Mia has three apples.", "Target1": "She has more than two.", "Target2": "She has none."}]
    ((good, good_start), (bad, bad_start)), (gs, bs) = E.pair_sequences(tok, "ewok", rows)
    for r, g, gst, b, bst in zip(rows, good, good_start, bad, bad_start):
        ctx = tok.encode(r["Context1"])
        assert gst == bst == len(ctx) and g[0] != tok.bos_id  # no BOS
        assert g == tok.encode(r["Context1"] + " " + r["Target1"]) and g[:len(ctx)] == ctx
        assert tok.decode(g[gst:]) == r["Target1"] and tok.decode(b[bst:]) == r["Target2"]
    assert gs == [" The cup is high.", " She has more than two."] and bs[1] == " She has none."


def test_blimp_scoring_is_bos_plus_sentence_with_every_token_scored(tok_model):
    tok, _ = tok_model
    ((good, starts), _), _ = E.pair_sequences(tok, "blimp", [{"sentence_good": "Is the cat happy?",
                                                            "sentence_bad": "Is the cat happy"}])
    assert good[0] == [tok.bos_id] + tok.encode(" Is the cat happy?") and starts == [1]


def test_metrics_on_hand_worked_cases():
    y, p = [1, 1, 0, 0], [1, 0, 0, 1]
    assert GL.accuracy(y, p) == 0.5 and GL.f1_binary(y, p) == 0.5 and GL.mcc(y, p) == 0.0
    y, p = [1, 1, 1, 0, 0], [1, 1, 0, 0, 1]  # tp 2, fp 1, fn 1, tn 1
    assert GL.f1_binary(y, p) == pytest.approx(4 / 6)
    assert GL.mcc(y, p) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert GL.mcc([1, 0, 1], [1, 1, 1]) == 0.0  # an empty column
    assert GL.mcc([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0) and GL.f1_binary([0, 0], [0, 0]) == 0.0
    assert GL.accuracy([0, 1, 2], [0, 2, 2]) == pytest.approx(2 / 3)


def test_glue_finetune_trains_the_head_and_reports_its_metric(tok_model):
    tok, m = tok_model
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(160):
        label = int(rng.integers(2))
        rows.append({"sentence": f"{'The dogs' if label else 'A cat'} {'sleep' if label else 'sleeps'} now.",
                     "label": label})
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = GL.finetune(m, tok, "cola", rows[:128], {"cola": rows[128:]}, torch.device("cpu"), "fp32", lr=3e-3,
                     batch_size=16, max_epochs=4)
    r = out["cola"]
    assert r["metric"] == "mcc" and r["score"] > 0.9 and len(r["pred"]) == 32 and len(r["right"]) == 32
    f1 = [h["f1"] for h in r["history"]]
    assert r["best_epoch"] == f1.index(max(f1))  # the best epoch is kept, the first of ties
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # fine-tuned a copy, not the model


def test_classifier_pools_the_last_real_token_not_the_padding(tok_model):
    _, m = tok_model
    clf = GL.Classifier(m, 3, seed=0).eval()
    seqs = [[1, 5, 9, 33, 7], [1, 8], [1, 40, 41]]
    x = torch.zeros(3, 5, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
    with torch.no_grad():
        batched = clf(x, torch.tensor([len(s) for s in seqs]))
        for i, s in enumerate(seqs):  # each sequence alone, unpadded
            torch.testing.assert_close(batched[i], clf(torch.tensor([s]), torch.tensor([len(s)]))[0])
    assert GL.glue_text("wsc", {"span1_text": "Joe", "span2_text": "he", "text": "T."})[0] == \
        'Does "he" refer to "Joe" in this passage?'
    assert GL.glue_text("multirc", {"question": "Q?", "answer": "A", "paragraph": "P."}) == ("Question: Q? Answer: A", "P.")


def test_evaluate_writes_results_tables_and_predictions(tok_model, syn, tmp_path):
    tok, m = tok_model
    root, _ = syn
    M.save_model(m, str(tmp_path / "ckpt.pt"), tokenizer_path=tok.path, tokenizer_sha=tok.sha, variant="toy")
    eval_dir = tmp_path / "eval"
    (eval_dir / "glue_filtered").mkdir(parents=True)
    os.symlink(root / "corpus" / "evaluation_data" / "blimp_filtered", eval_dir / "blimp_filtered")
    rows = [{"sentence": "The dog runs.", "label": i % 2} for i in range(20)]
    for split in ("train", "valid"):
        (eval_dir / "glue_filtered" / f"cola.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (eval_dir / "glue_filtered" / "rte.valid.jsonl").write_text(json.dumps({"sentence1": "a", "sentence2": "b",
                                                                           "label": 0}) + "\n")
    args = argparse.Namespace(tokenizer="", device="cpu", precision="fp32", out_dir=str(tmp_path / "out"),
                              tasks="blimp,glue", eval_dir=str(eval_dir), glue_tasks="cola,rte",
                              max_train_examples=8, max_epochs=1, diagnostics=False, teacher="")
    res = E.evaluate(str(tmp_path / "ckpt.pt"), args)
    assert set(res["zero_shot"]["blimp"]) == {"syn_subject_verb", "syn_agreement_across_pp", "syn_question_aux",
                                              "syn_agreement_across_relative", "syn_determiner_noun", "syn_transitivity"}
    assert res["glue_skipped"] == {"rte": "no training file"} and res["glue"]["cola"]["n_train"] == 8
    assert any("at most 8" in d for d in res["departures"])
    saved = json.load(open(tmp_path / "out" / "results.json"))
    assert saved["scores"]["blimp"] == pytest.approx(np.mean(list(saved["zero_shot"]["blimp"].values())))
    assert saved["precision"] == {"zero_shot": "fp32", "glue": "fp32"}
    E.main([str(tmp_path / "ckpt.pt"), "--tasks", "blimp", "--eval-dir", str(eval_dir), "--device", "cpu",
            "--out-dir", str(tmp_path / "cli")])  # no --precision: the CLI's default, as the official harness
    assert json.load(open(tmp_path / "cli" / "results.json"))["precision"] == {"zero_shot": "fp32"}
    preds = json.load(gzip.open(tmp_path / "out" / "predictions.json.gz"))
    assert len(preds["blimp"]["syn_subject_verb"]["predictions"]) == 30
    assert preds["glue"]["cola"]["predictions"][0]["id"] == "cola_0"
    assert "| glue | CoLA (MCC) |" in open(tmp_path / "out" / "tables.md").read()
    args.glue_tasks = "cola,sst2"
    with pytest.raises(ValueError, match="lacks the sst2 task"):
        E.evaluate(str(tmp_path / "ckpt.pt"), args)
    with pytest.raises(ValueError, match="not found"):
        E.load_zero_shot(str(tmp_path / "nowhere"), ["blimp"])


@pytest.mark.skipif(not os.path.isdir(os.path.join(EVAL_DIR, "blimp_filtered")), reason="no BabyLM eval data here")
def test_real_evaluation_data_loads_with_the_official_counts():
    suites = E.load_zero_shot(EVAL_DIR, ["blimp", "supplement", "ewok"])
    assert len(suites["blimp"]) == 67 and sum(map(len, suites["blimp"].values())) == 59_875
    assert sorted(suites["blimp_supplement"]) == sorted(E.SUPPLEMENT)
    assert sum(map(len, suites["blimp_supplement"].values())) == 5_218
    assert sorted(suites["ewok"]) == sorted(E.EWOK) and sum(map(len, suites["ewok"].values())) == 7_618
    terms = {r[0]["linguistics_term"] for r in suites["blimp"].values()}
    assert len(terms) == 13 and set(E.phenomenon_scores(suites["blimp"], {u: 0.5 for u in suites["blimp"]})) \
        == set(E.PHENOMENA)
    for task in GL.GLUE:
        rows = E.read_jsonl(os.path.join(EVAL_DIR, "glue_filtered", f"{task}.valid.jsonl"))
        for r in rows[:50]:
            first, second = GL.glue_text(task, r)
            assert first.strip() and "label" in r and (second is None) == (task in ("cola", "sst2"))


def test_diagnostics_on_a_hand_made_distribution():
    # student: probabilities (0.5, 0.25, 0.25); teacher: (0.7, 0.2, 0.1) -> hand-computed values
    s = torch.tensor([[0.5, 0.25, 0.25]]).log()
    t = torch.tensor([[0.7, 0.2, 0.1]]).log()
    d = MS.distribution_stats(s, t, k=2)
    assert d["entropy"].item() == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)), rel=1e-5)
    assert d["top1_agreement"].item() == 1.0
    assert d["mass_on_teacher_top2"].item() == pytest.approx(0.75, rel=1e-6)  # teacher's top 2: tokens 0 and 1
    fkl = 0.7 * np.log(0.7 / 0.5) + 0.2 * np.log(0.2 / 0.25) + 0.1 * np.log(0.1 / 0.25)
    rkl = 0.5 * np.log(0.5 / 0.7) + 0.25 * np.log(0.25 / 0.2) + 0.25 * np.log(0.25 / 0.1)
    assert d["forward_kl"].item() == pytest.approx(fkl, rel=1e-5) and d["reverse_kl"].item() == pytest.approx(rkl, rel=1e-5)
    assert MS.distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert MS.distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert MS.repetition_rate([[1, 2, 1, 2, 1, 2], [1, 2, 3, 4, 5]], 2) == pytest.approx((1 - 2 / 5 + 0) / 2)


def test_an_over_long_item_is_scored_on_its_last_max_seq_len_tokens():
    m = M.build_model(M.get_config("debug"), seed=2).eval()  # max_seq_len 128
    long = [1] + list(range(5, 205))  # 201 tokens
    got = E.sequence_logprobs(m, [long], [1], torch.device("cpu"), "fp32")[0]
    tail = long[-128:]
    with torch.no_grad():
        lp = F.log_softmax(m(torch.tensor([tail]))[0].double(), -1)
    assert got == pytest.approx(sum(lp[j - 1, tail[j]].item() for j in range(1, 128)), abs=1e-4)


def test_mnli_has_three_labels_selects_by_accuracy_and_rides_mismatched_along(tok_model, monkeypatch):
    tok, m = tok_model
    rng = np.random.default_rng(1)
    words = ["dog", "cat", "bird"]
    rows = [{"premise": f"The {words[k]} runs.", "hypothesis": f"A {words[k]}.", "label": int(k)}
            for k in rng.integers(0, 3, 96)]
    lrs = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (lrs.append(self.param_groups[0]["lr"]),
                                                                           real_step(self, *a, **k))[1])
    out = GL.finetune(m, tok, "mnli", rows[:64], {"mnli": rows[64:80], "mnli-mm": rows[80:]}, torch.device("cpu"),
                     "fp32", lr=3e-3, batch_size=16, max_epochs=2)
    assert set(out) == {"mnli", "mnli-mm"} and out["mnli"]["metric"] == "accuracy"
    assert set(out["mnli"]["pred"]) <= {0, 1, 2} and out["mnli"]["score"] > 0.5  # three classes, learned
    assert out["mnli"]["best_epoch"] == out["mnli-mm"]["best_epoch"]  # chosen on matched, applied to both
    assert lrs == pytest.approx([3e-3 * (1 - s / 8) for s in range(8)])  # linear decay to 0, no warmup


def test_early_stopping_after_patience_epochs_without_improvement(tok_model):
    tok, m = tok_model
    rows = [{"sentence": "The dog runs.", "label": i % 2} for i in range(32)]  # nothing to learn
    out = GL.finetune(m, tok, "cola", rows[:16], {"cola": rows[16:]}, torch.device("cpu"), "fp32", lr=0.0,
                     batch_size=16, max_epochs=10, patience=3)
    assert len(out["cola"]["history"]) == 4 and out["cola"]["best_epoch"] == 0  # epoch 0, then 3 without gain


def test_the_best_validation_epoch_is_kept(tok_model, monkeypatch):
    """Scripted validation predictions per epoch (F1 0, then 1, then 0.8): epoch 1 is kept and reported."""
    tok, m = tok_model
    rows = [{"sentence": "The dog runs.", "label": i % 2} for i in range(16)]
    labels = np.array([r["label"] for r in rows[8:]])
    scripted = iter([np.zeros(8, int), labels.copy(), np.where(np.arange(8) < 4, labels, 1)])
    monkeypatch.setattr(GL, "predict", lambda *a, **k: next(scripted))
    out = GL.finetune(m, tok, "cola", rows[:8], {"cola": rows[8:]}, torch.device("cpu"), "fp32", max_epochs=3)
    assert [round(h["f1"], 2) for h in out["cola"]["history"]] == [0.0, 1.0, 0.8]
    assert out["cola"]["best_epoch"] == 1 and out["cola"]["score"] == 1.0  # MCC of the perfect epoch


def test_bf16_scoring_runs_and_stays_close_to_fp32(tok_model):
    tok, m = tok_model
    seqs = [[tok.bos_id] + s for s in tok.encode(["The dog runs.", "These dogs see a ball.", "Is the cat happy?"])]
    fp32 = E.sequence_logprobs(m, seqs, [1] * 3, torch.device("cpu"), "fp32")
    bf16 = E.sequence_logprobs(m, seqs, [1] * 3, torch.device("cpu"), "bf16")
    assert np.allclose(bf16, fp32, rtol=0.02) and not np.array_equal(bf16, fp32)  # the trunk really ran in bf16


def test_identical_sentences_tie_even_when_batching_differs(tok_model, monkeypatch):
    """Two copies of one string scored in different batches can differ by ~1e-6 (padding); lm-eval ties them."""
    tok, m = tok_model
    rows = [{"sentence_good": "The dog runs.", "sentence_bad": "The dog runs."},
            {"sentence_good": "The dogs run.", "sentence_bad": "The dogs runs."}]
    real = E.sequence_logprobs

    def jittered(*a, **k):  # the bad copy of the identical pair comes out 1e-6 higher, as another batch may give
        out = real(*a, **k)
        out[2] += 1e-6
        return out
    monkeypatch.setattr(E, "sequence_logprobs", jittered)
    _, items, _ = E.zero_shot(m, tok, {"blimp": {"toy": rows}}, torch.device("cpu"), "fp32")
    assert items["blimp"]["toy"][0] == "1"


def test_glue_pairs_are_truncated_longest_first_as_the_official_script():
    class Tok:  # one token per word: lengths are easy to read
        bos_id, eos_id = 1, 2

        def encode(self, s):
            return [10 + len(w) for w in s.split()]
    long_premise, hypothesis = " ".join(["word"] * 200), "a short hypothesis here"
    ids = GL.encode_examples(Tok(), "rte", [{"sentence1": long_premise, "sentence2": hypothesis}], max_len=128)[0]
    assert len(ids) == 128 and ids[0] == 1
    eos = ids.index(2)
    assert ids[eos + 1:] == Tok().encode(hypothesis) and eos == 128 - 4 - 1  # the hypothesis kept whole
    both = GL.encode_examples(Tok(), "rte", [{"sentence1": long_premise, "sentence2": long_premise}], max_len=128)[0]
    assert len(both) == 128 and both.index(2) - 1 == 63 and len(both) - both.index(2) - 1 == 63  # cut evenly
    single = GL.encode_examples(Tok(), "cola", [{"sentence": long_premise}], max_len=128)[0]
    assert len(single) == 128 and single[0] == 1


def test_early_stopping_counts_gains_below_the_official_threshold_as_none(tok_model, monkeypatch):
    """F1 rising by less than 0.001 per epoch: the best epoch follows the rise, patience runs out anyway."""
    tok, m = tok_model
    rows = [{"sentence": "The dog runs.", "label": i % 2} for i in range(16)]
    f1 = iter([0.5, 0.5004, 0.5008, 0.5012, 0.9, 0.9])
    monkeypatch.setattr(GL, "f1_binary", lambda *a: next(f1))
    out = GL.finetune(m, tok, "cola", rows[:8], {"cola": rows[8:]}, torch.device("cpu"), "fp32", max_epochs=6,
                     batch_size=8)
    hist = out["cola"]["history"]
    assert len(hist) == 4 and out["cola"]["best_epoch"] == 3  # stopped after 3 epochs of gains <= 0.001


def test_partial_reruns_merge_per_task_and_another_checkpoint_starts_afresh(tok_model, syn, tmp_path):
    tok, m = tok_model
    root, _ = syn
    M.save_model(m, str(tmp_path / "a.pt"), tokenizer_path=tok.path, tokenizer_sha=tok.sha, variant="a")
    paradigms = sorted(os.listdir(root / "corpus" / "evaluation_data" / "blimp_filtered"))
    for half, names in (("one", paradigms[:3]), ("two", paradigms[3:])):  # two calls, each half the paradigms
        (tmp_path / half / "blimp_filtered").mkdir(parents=True)
        (tmp_path / half / "glue_filtered").mkdir()
        for name in names:
            os.symlink(root / "corpus" / "evaluation_data" / "blimp_filtered" / name, tmp_path / half / "blimp_filtered" / name)
    rows = [{"sentence": "The dog runs.", "label": i % 2} for i in range(20)]
    for split in ("train", "valid"):
        (tmp_path / "two" / "glue_filtered" / f"cola.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = argparse.Namespace(tokenizer="", device="cpu", precision="fp32", out_dir=str(tmp_path / "out"),
                              tasks="blimp", eval_dir=str(tmp_path / "one"), glue_tasks="cola", max_train_examples=0,
                              max_epochs=1)
    first = E.evaluate(str(tmp_path / "a.pt"), args)
    assert any(d.startswith("not evaluated: blimp_supplement, ewok, glue") for d in first["departures"])
    args.tasks, args.eval_dir = "blimp,glue", str(tmp_path / "two")
    E.evaluate(str(tmp_path / "a.pt"), args)  # the same checkpoint and folder, other paradigms and GLUE
    saved = json.load(open(tmp_path / "out" / "results.json"))
    assert {"blimp", "glue"} <= set(saved["scores"]) and sorted(saved["zero_shot"]["blimp"]) == \
        [p[:-6] for p in paradigms] and saved["scores"]["blimp"] == pytest.approx(
            np.mean(list(saved["zero_shot"]["blimp"].values())))
    preds = json.load(gzip.open(tmp_path / "out" / "predictions.json.gz"))
    assert set(preds) == {"blimp", "glue"}
    tables = open(tmp_path / "out" / "tables.md").read()
    assert "| glue | CoLA (MCC) |" in tables and "| blimp | Subj.-Verb Agr. | - |" not in tables
    meta = json.load(open(tmp_path / "out" / "predictions.meta.json"))
    assert meta["checkpoint_sha"] == saved["checkpoint_sha"] and set(meta["tasks"]) == {"blimp", "glue"}
    other = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=99)
    M.save_model(other, str(tmp_path / "b.pt"), tokenizer_path=tok.path, tokenizer_sha=tok.sha, variant="b")
    args.tasks = "glue"
    E.evaluate(str(tmp_path / "b.pt"), args)  # another checkpoint into the same folder: nothing of a.pt survives
    saved = json.load(open(tmp_path / "out" / "results.json"))
    assert "zero_shot" not in saved and "blimp" not in saved["scores"] and saved["replaced"].endswith("a.pt")
    assert set(json.load(gzip.open(tmp_path / "out" / "predictions.json.gz"))) == {"glue"}


def test_departures_name_precision_and_the_report_warns_about_rejected_predictions(tmp_path):
    import report as R
    res = {"scores": {"blimp": 0.5, "glue": 0.5}, "precision": {"zero_shot": "bf16", "glue": "fp32"},
           "glue_recipe": {"max_train_examples": 500, "max_epochs": 2, "tasks": ""}, "glue_skipped": {"rte": "x"}}
    d = E.departures(res)
    assert "zero_shot scored in bf16 (the official harness runs fp32)" in d and any("at most 500" in x for x in d)
    assert any(x.startswith("not evaluated: blimp_supplement, ewok") for x in d)
    run = tmp_path / "ChooBaCa-rv-1-24" / "eval"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({**res, "departures": d, "items": {}}))
    assert "the official collector would reject the predictions file of ChooBaCa-rv-1-24" in \
        R.report(str(tmp_path), str(tmp_path / "r.md"))


def test_phenomenon_rows_are_the_mean_of_their_paradigms():
    """Table 2's rows: each paradigm counts once (not each item), s-selection joins argument structure."""
    def rows(term, n):
        return [{"linguistics_term": term}] * n
    blimp = {"p1": rows("island_effects", 10), "p2": rows("island_effects", 990), "p3": rows("s-selection", 5),
             "p4": rows("argument_structure", 500), "p5": rows("binding", 7)}
    acc = {"p1": 0.2, "p2": 0.8, "p3": 1.0, "p4": 0.4, "p5": 0.9}
    got = E.phenomenon_scores(blimp, acc)
    assert got == pytest.approx({"island_effects": 0.5, "argument_structure": 0.7, "binding": 0.9})
