import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
CORPUS_DIR = os.environ.get("BABYLM_DIR", os.path.join(SHARED, "corpus"))
EVAL_DIR = os.environ.get("BABYLM_EVAL_DIR", os.path.join(SHARED, "eval"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def syn(tmp_path_factory):
    """A small synthetic corpus, and the common flags that point the scripts at it."""
    from lab.grammar import write_corpus
    root = tmp_path_factory.mktemp("syn")
    write_corpus(str(root / "corpus"), n_train=3000, n_dev=300, n_pairs=30)
    flags = dict(data="synthetic", data_dir=str(root / "corpus"), work_dir=str(root / "work"), vocab_size=320,
                 seq_len=32, device="cpu", precision="fp32", log_every=1, eval_max_seqs=64)
    return root, flags
