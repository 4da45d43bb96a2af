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
