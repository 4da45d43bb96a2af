"""data.py: cleaning, tokenizer, token caches, batches, synthetic corpus, download and the real corpus."""
import hashlib
import http.server
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest
import torch

import data as D
from lab import grammar as G
from lab.grammar import write_corpus
from conftest import CORPUS_DIR


def test_cleaning_functions():
    assert D.clean_spaces("a  b\t\tc , d .") == "a b c, d."
    assert D.drop_subtitle_lines("hi\nSubtitles by X\nbye") == "hi\nbye"
    assert D.recase_upper_lines("HELLO THERE. I AM HERE\nMixed Case") == "Hello there. I am here\nMixed Case"
    assert D.join_apostrophes("I do n't know , it 's ok") == "I don't know , it's ok"
    assert D.clean_text("cbt", "do n't  stop .") == "don't stop."


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    write_corpus(str(root / "corpus"), n_train=3000, n_dev=300, n_pairs=20)
    corpus = D.prepare("synthetic", str(root / "corpus"), vocab_size=300, work_dir=str(root / "work"))
    return root, corpus


def corpus_file(synthetic) -> str:
    return str(synthetic[0] / "corpus" / "train" / "synthetic.train")


def test_synthetic_corpus_is_deterministic_and_pairs_well_formed(tmp_path, synthetic):
    root, _ = synthetic
    write_corpus(str(tmp_path / "again"), n_train=3000, n_dev=300, n_pairs=20)
    for rel in ["train/synthetic.train", "dev/synthetic.dev"]:
        assert (tmp_path / "again" / rel).read_bytes() == (root / "corpus" / rel).read_bytes()
    blimp = tmp_path / "again" / "evaluation_data" / "blimp_filtered"
    files = sorted(os.listdir(blimp))
    assert len(files) == 6
    for f in files:
        rows = [json.loads(line) for line in open(blimp / f)]
        assert len(rows) == 20
        for r in rows:
            assert {"sentence_good", "sentence_bad", "UID", "linguistics_term"} <= set(r)
            good, bad = r["sentence_good"].split(), r["sentence_bad"].split()
            assert len(good) == len(bad) and sum(a != b for a, b in zip(good, bad)) == 1  # one word differs


def test_synthetic_tokenizer_is_one_piece_per_word_and_keeps_the_exact_probabilities(synthetic):
    """The synthetic language's tokenizer has exactly its words (and punctuation) as pieces, no byte pieces:
    every sentence round-trips word for word, so the grammar's exact probability of a decoded sample is the
    probability of the sentence the tokens spell (the inside check of lab/measures.py holds)."""
    _, corpus = synthetic
    tok = corpus.tokenizer
    words = G.PCFG().vocabulary
    seen = {w for line in open(corpus_file(synthetic)) for w in G.words(line)}
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2) and tok.vocab_size == 4 + len(seen) <= 4 + len(words)
    pcfg, rng = G.PCFG(), np.random.default_rng(5)
    sents = G.sentences(rng, 200)
    for s, ids in zip(sents, tok.encode(sents)):
        assert [tok.sp.id_to_piece(i).lstrip("▁") for i in ids] == G.words(s)  # one piece per word
        assert tok.decode(ids) == s
    np.testing.assert_array_equal(pcfg.logprob([tok.decode(ids) for ids in tok.encode(sents)]), pcfg.logprob(sents))
    assert tok.encode("the zebra runs.") == tok.encode("the") + [3] + tok.encode(" runs.")  # unknown: unk, not bytes


def test_a_window_offset_is_every_epoch_s_and_every_seed_s():
    """--window-offset k: every epoch of every seed reads tokens[k + i T : k + (i + 1) T] (one teacher cache
    serves them all); the seed still draws each epoch's order."""
    tokens = np.arange(77, dtype=np.uint16)  # token i is i: a window shows where it starts; 8 windows of 8
    seen = {}
    for seed in (1, 2):
        b = D.Batches(tokens, 8, 2, seed=seed, offset=3)
        assert b.fixed and [b.offset(e) for e in range(4)] == [3, 3, 3, 3]
        for epoch in range(3):
            batches = [x for x in b.epoch(epoch)]
            starts = sorted(int(r[0]) for x in batches for r in x)
            assert starts == [3 + 8 * i for i in range(b.n_seq)]  # every window at offset 3, once an epoch
            seen[(seed, epoch)] = [int(x[0, 0]) for x in batches]
    assert seen[(1, 0)] != seen[(2, 0)] and seen[(1, 0)] != seen[(1, 1)]  # orders differ by seed and epoch


def test_bpe_tokenizer_round_trip_with_byte_fallback(tmp_path, synthetic):
    """The BabyLM layouts' BPE tokenizer: special ids, and unseen characters through byte fallback."""
    root, _ = synthetic
    lines = open(corpus_file(synthetic)).read().splitlines()
    train_dir, sources, dev_dir = D.LAYOUTS["2024"]
    for folder, ext in ((train_dir, "train"), (dev_dir, "dev")):
        os.makedirs(tmp_path / "babylm" / folder)
        for i, src in enumerate(sources):
            (tmp_path / "babylm" / folder / f"{src}.{ext}").write_text("\n".join(lines[i::len(sources)]) + "\n")
    tok = D.prepare("2024", str(tmp_path / "babylm"), vocab_size=400, work_dir=str(tmp_path / "work")).tokenizer
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 400)
    text = "The little dogs that the cat sees jump. Zebra ü!"  # unseen characters go through byte fallback
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and 3 not in ids
    assert tok.decode(ids[1:-1]) == text


def test_token_cache_rebuilt_when_tokenizer_or_file_changes(tmp_path, synthetic):
    root, corpus = synthetic
    train, _ = D.corpus_files("synthetic", str(root / "corpus"))
    cache = tmp_path / "cache"
    a = D.token_cache(corpus.tokenizer, train, str(cache), "train")
    assert np.array_equal(a, corpus.train)
    assert len(os.listdir(cache)) == 1
    D.token_cache(corpus.tokenizer, train, str(cache), "train")  # reused
    assert len(os.listdir(cache)) == 1
    changed = tmp_path / "synthetic.train"
    changed.write_text(open(train[0]).read() + "One more line.\n")
    b = D.token_cache(corpus.tokenizer, [str(changed)], str(cache), "train")
    assert len(os.listdir(cache)) == 2 and len(b) > len(a)
    other = str(tmp_path / "tok.model")
    D.train_tokenizer(train, 310, other)
    D.token_cache(D.Tokenizer(other), train, str(cache), "train")
    assert len(os.listdir(cache)) == 3
    sep = D.token_cache(corpus.tokenizer, train, str(cache), "train", separator="bos")
    assert (np.asarray(sep) == 1).sum() == sum(1 for line in open(train[0]) if line.strip())


def test_batches_offsets_permutations_and_resume():
    tokens = np.arange(10_000, dtype=np.uint16)
    b = D.Batches(tokens, seq_len=16, batch_size=8, seed=5)
    assert b.steps_per_epoch == b.n_seq // 8
    e0 = list(b.epoch(0))
    assert all(x.shape == (8, 16) and x.dtype == torch.int64 for x in e0)
    offsets = {b.order(e)[0] for e in range(20)}
    assert all(0 <= o < 16 for o in offsets) and len(offsets) > 1
    first = [int(x[0, 0]) for x in e0]
    assert first != [int(x[0, 0]) for x in b.epoch(1)]  # a fresh permutation each epoch
    assert all(torch.equal(x, y) for x, y in zip(e0, D.Batches(tokens, 16, 8, seed=5).epoch(0)))
    for x in e0:  # every row is a contiguous window at the epoch's offset
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.int64))
        assert ((x[:, 0] - b.order(0)[0]) % 16 == 0).all()
    resumed = list(b.epoch(0, start_step=3))
    assert len(resumed) == len(e0) - 3 and torch.equal(resumed[0], e0[3])
    shards = [list(D.Batches(tokens, 16, 8, seed=5, rank=r, world=2).epoch(0)) for r in range(2)]
    for full, r0, r1 in zip(e0, *shards):
        assert torch.equal(torch.cat([r0, r1]), full)


def test_validation_subset_fixed_and_bounded():
    tokens = np.arange(64 * 100, dtype=np.uint16)
    v = D.val_sequences(tokens, 64, max_n=30)
    assert v.shape == (30, 64) and torch.equal(v, D.val_sequences(tokens, 64, max_n=30))
    assert (v[:, 0] % 64 == 0).all()  # offset 0
    assert D.val_sequences(tokens, 64).shape == (100, 64)


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="missing 12 of 12 files.*osf.io"):
        D.corpus_files("2024", str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "dev").mkdir()
    (tmp_path / "train" / "synthetic.train").write_text("")
    (tmp_path / "dev" / "synthetic.dev").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ValueError, match="is empty"):
        D.corpus_files("synthetic", str(tmp_path))
    with pytest.raises(ValueError, match="not UTF-8"):
        D.read_clean_lines(str(tmp_path / "dev" / "synthetic.dev"))


def _serve(directory):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=directory, **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_verifies_and_unpacks_atomically(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("babylm_data/babylm_10M/cbt.train", "once upon a time\n")
        z.writestr("babylm_data/babylm_dev/cbt.dev", "the end\n")
        z.writestr("__MACOSX/babylm_data/babylm_10M/._cbt.train", "junk")
        z.writestr("babylm_data/README.md", "not data")
    blob = buf.getvalue()
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "d.zip").write_bytes(blob)
    server = _serve(str(tmp_path / "srv"))
    url = f"http://127.0.0.1:{server.server_port}/d.zip"
    try:
        dest = tmp_path / "dest"
        D.download("2023", str(dest), {"2023": [(url, hashlib.sha256(blob).hexdigest(), len(blob))]})
        assert sorted(os.listdir(dest)) == ["babylm_10M", "babylm_dev"]
        assert (dest / "babylm_10M" / "cbt.train").read_text() == "once upon a time\n"
        bad = tmp_path / "bad"
        with pytest.raises(ValueError, match="sha256 mismatch"):
            D.download("2023", str(bad), {"2023": [(url, "0" * 64, None)]})
        with pytest.raises(ValueError, match="failed"):
            D.download("2023", str(bad), {"2023": [(url + "-missing", None, None)]})
        assert not bad.exists() and not (tmp_path / "bad.partial").exists()
    finally:
        server.shutdown()


@pytest.mark.skipif(not os.path.isdir(os.path.join(CORPUS_DIR, "train_10M")), reason="no BabyLM corpus here")
def test_prepare_on_a_slice_of_the_real_corpus(tmp_path, capsys):
    for folder, ext in (("train_10M", "train"), ("dev", "dev")):
        (tmp_path / "c" / folder).mkdir(parents=True)
        for src in D.LAYOUTS["2024"][1]:
            with open(os.path.join(CORPUS_DIR, folder, f"{src}.{ext}"), encoding="utf-8") as f:
                head = [next(f) for _ in range(300)]
            (tmp_path / "c" / folder / f"{src}.{ext}").write_text("".join(head))
    D.main(["prepare", "--data", "2024", "--data-dir", str(tmp_path / "c"), "--vocab-size", "1000",
            "--work-dir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert "train_10M/childes.train" in out and "dev/switchboard.dev" in out and "vocab 1000" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("train_10M/", "dev/"))]
    assert len(rows) == 12 and all(int(r[1].replace(",", "")) > 0 and int(r[2].replace(",", "")) > 0 for r in rows)
