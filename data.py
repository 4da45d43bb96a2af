"""BabyLM strict-small corpora (README "Tokenizer and data"): layouts, Baby Llama's cleaning, a SentencePiece BPE
tokenizer, uint16 token caches and the epoch batches every script trains on.

    BABYLM_DIR=../shared/data/corpus python data.py prepare --data 2024
    python data.py prepare --data synthetic --data-dir out/babylm_synthetic   # a corpus written by lab/grammar.py
    python data.py download --data 2024 --dest data/babylm_2024

Shape legend: N sequences, B batch, T time (sequence length).
"""
import argparse
import hashlib
import io
import json
import os
import re
import shutil
import time
import urllib.request
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from cli import guard

LAYOUTS = {  # data set -> (train folder, sources, dev folder)
    "2024": ("train_10M", ["bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki", "switchboard"], "dev"),
    "2023": ("babylm_10M", ["aochildes", "bnc_spoken", "cbt", "children_stories", "gutenberg", "open_subtitles",
                            "qed", "simple_wikipedia", "switchboard", "wikipedia"], "babylm_dev"),
    "synthetic": ("train", ["synthetic"], "dev"),
}
OFFICIAL = {"2024": "https://osf.io/ad7qg/ (train_10M.zip, dev.zip)",
            "2023": "https://github.com/babylm/babylm.github.io (babylm_data.zip)",
            "synthetic": "`python -m lab.grammar --write DIR` (sampled from the synthetic grammar)"}
DOWNLOADS = {  # data set -> [(url, sha256 or None, size or None)]
    "2024": [("https://osf.io/download/5mk3x/", None, None), ("https://osf.io/download/m48ed/", None, None)],
    "2023": [("https://github.com/babylm/babylm.github.io/raw/main/babylm_data.zip",
              "1337771192c61fa38c7eca2ef535f568c19270789b114fe7c60fe23e4314ab57", 253_170_132)],
}
PAD, BOS, EOS, UNK = 0, 1, 2, 3
VAL_SEED = 1234  # one fixed validation subset, shared by every teacher and student


def default_data_dir(data: str) -> str:
    """$BABYLM_DIR for 2024, $BABYLM_2023_DIR for 2023, else data/babylm_<data>."""
    env = {"2024": "BABYLM_DIR", "2023": "BABYLM_2023_DIR"}.get(data, "")
    return os.environ.get(env) or os.path.join("data", f"babylm_{data}")


def corpus_files(data: str, data_dir: str) -> tuple:
    """(train files, dev files) of a layout, checked: one clear ValueError naming what is missing."""
    if data not in LAYOUTS:
        raise ValueError(f"unknown data set {data!r}: use one of {', '.join(LAYOUTS)}")
    train_dir, sources, dev_dir = LAYOUTS[data]
    train = [os.path.join(data_dir, train_dir, f"{s}.train") for s in sources]
    dev = [os.path.join(data_dir, dev_dir, f"{s}.dev") for s in sources]
    missing = [f for f in train + dev if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"BabyLM {data} data incomplete in {data_dir!r}: missing {len(missing)} of {len(train + dev)} "
                         f"files ({', '.join(os.path.relpath(f, data_dir) for f in missing[:4])}...); expected "
                         f"{train_dir}/<source>.train and {dev_dir}/<source>.dev for sources {', '.join(sources)}. "
                         f"Get it from {OFFICIAL[data]} and pass --data-dir or set BABYLM_DIR")
    for f in train + dev:
        if os.path.getsize(f) == 0:
            raise ValueError(f"corpus file {f} is empty: re-download or regenerate the data set")
    return train, dev


# ---------------------------------------------------------------------------------------------------------
# cleaning (Baby Llama's mrclean, per source)


def clean_spaces(text: str) -> str:
    """Collapse runs of spaces and tabs; drop the space before punctuation."""
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r" +([.,!?;:)])", r"\1", text)


def drop_subtitle_lines(text: str) -> str:
    """open_subtitles: credit lines ('Subtitles by ...') carry no dialogue."""
    return "\n".join(line for line in text.split("\n") if "subtitle" not in line.lower())


def recase_upper_lines(text: str) -> str:
    """qed: lines mostly in capitals are lower-cased, then sentence starts and 'I' are capitalised."""
    out = []
    for line in text.split("\n"):
        letters = [c for c in line if c.isalpha()]
        if letters and sum(c.isupper() for c in letters) > 0.5 * len(letters):
            line = re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), line.lower())
            line = re.sub(r"\bi\b", "I", line)
        out.append(line)
    return "\n".join(out)


def join_apostrophes(text: str) -> str:
    """cbt: "do n't" -> "don't", "it 's" -> "it's"."""
    return re.sub(r" (n't|'(?:s|t|re|ve|ll|d|m)\b)", r"\1", text)


CLEANERS = {"open_subtitles": [drop_subtitle_lines], "qed": [recase_upper_lines], "cbt": [join_apostrophes]}


def clean_text(source: str, text: str) -> str:
    for fn in CLEANERS.get(source, []):
        text = fn(text)
    return clean_spaces(text)


def read_clean_lines(path: str) -> list:
    """Non-empty cleaned lines of one corpus file; a non-UTF-8 file is one clear error."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {path} is not UTF-8 (byte {e.start}): re-download it") from None
    source = os.path.basename(path).rsplit(".", 1)[0]
    return [line.strip() for line in clean_text(source, text).split("\n") if line.strip()]


# ---------------------------------------------------------------------------------------------------------
# tokenizer


def corpus_words(files: list) -> list:
    """Every distinct word of the cleaned files as a SentencePiece piece: "▁word", punctuation on its own."""
    found = set()
    for f in files:
        for line in read_clean_lines(f):
            found.update(re.findall(r"[^\s.,!?;:)]+|[.,!?;:)]", line))
    return sorted(w if w in ".,!?;:)" else "▁" + w for w in found)


def train_tokenizer(files: list, vocab_size: int, model_path: str, max_sentences: int = 2_000_000,
                    words: list = None):
    """SentencePiece BPE with byte fallback (nothing is ever unknown), NFKC, pad 0 / bos 1 / eos 2 / unk 3.
    At most `max_sentences` lines are sampled, which bounds time and memory on 10M words. `vocab_size` is a
    soft limit. With `words` (the synthetic language's corpus_words) every word is one piece and nothing else
    is: a vocabulary of exactly the language's words, no byte pieces."""
    import sentencepiece as spm
    lines = (line for f in sorted(files) for line in read_clean_lines(f))
    prefix = model_path[: -len(".model")] + f".tmp{os.getpid()}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_prefix=prefix, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=not words, user_defined_symbols=words or [], normalization_rule_name="nfkc",
        character_coverage=1.0 if words else 0.9995,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, input_sentence_size=max_sentences,
        shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, max_sentence_length=1 << 16,
        hard_vocab_limit=False, minloglevel=2)
    os.replace(prefix + ".model", model_path)
    os.remove(prefix + ".vocab")


class Tokenizer:
    def __init__(self, model_path: str):
        import sentencepiece as spm
        if not os.path.isfile(model_path):
            raise ValueError(f"tokenizer {model_path} not found: run `python data.py prepare` first")
        self.path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        with open(model_path, "rb") as f:
            self.sha = hashlib.sha256(f.read()).hexdigest()
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.bos_id, self.eos_id = self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()

    def encode(self, text, bos: bool = False, eos: bool = False):
        """A string -> list of ids; a list of strings -> list of lists (encoded on all cores)."""
        ids = self.sp.encode(text, add_bos=bos, add_eos=eos, num_threads=os.cpu_count() or 1)
        return ids

    def decode(self, ids) -> str:
        return self.sp.decode(list(ids))


def hf_tokenizer_files(model_path: str, max_len: int) -> dict:
    """{file name: JSON} for a Hugging Face fast tokenizer equal to this SentencePiece model: tokenizer.json
    (BPE over the same pieces, byte fallback, SentencePiece's normalisation: NFKC, runs of spaces collapsed,
    stripped, a "▁" prefix; BOS before a sentence, `BOS a EOS b` for pairs), tokenizer_config.json with a
    pad token, special_tokens_map.json. Merges are recovered from the pieces as transformers' converter does:
    every split of a piece into two pieces, ranked by the merged piece's score. Tested token for token."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    special = [i for i in range(len(pieces)) if sp.is_control(i) or sp.is_unknown(i)]
    merges = []
    for i, p in enumerate(pieces):
        if i not in special and not sp.is_byte(i):
            splits = sorted(((p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab),
                            key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
            merges += [(-sp.get_score(i), i, list(lr)) for lr in splits]
    bos, eos, unk, pad = (pieces[j] for j in (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id()))
    token = lambda t, type_id=0: {"SpecialToken": {"id": t, "type_id": type_id}}  # noqa: E731
    seq = lambda s, type_id: {"Sequence": {"id": s, "type_id": type_id}}  # noqa: E731
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in special],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Strip", "strip_left": True, "strip_right": True}, {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [lr for _, _, lr in sorted(merges)]},
        "post_processor": {"type": "TemplateProcessing", "single": [token(bos), seq("A", 0)],
                           "pair": [token(bos), seq("A", 0), token(eos), seq("B", 1)],
                           "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in (bos, eos)}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
    names = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len, "padding_side": "right",
              "clean_up_tokenization_spaces": False, **names}
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": config, "special_tokens_map.json": names}


# ---------------------------------------------------------------------------------------------------------
# token caches


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def hash_files(paths: list, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def token_cache(tok: Tokenizer, files: list, cache_dir: str, split: str, separator: str = "none") -> np.ndarray:
    """All files' cleaned lines as one uint16 token stream, memmapped from a file whose name hashes the
    tokenizer model, the input files and the separator, so any change rebuilds it."""
    assert tok.vocab_size < 65536, "uint16 cache needs a vocabulary below 65536"
    if separator not in ("none", "bos", "eos", "both"):
        raise ValueError(f"unknown separator {separator!r}: use none, bos, eos or both")
    key = hash_files(files, extra=f"{tok.sha}|{separator}|clean-v1")
    path = os.path.join(cache_dir, f"{split}-{key}.bin")
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as out:
            for f in sorted(files):
                ids = tok.encode(read_clean_lines(f), bos=separator in ("bos", "both"), eos=separator in ("eos", "both"))
                out.write(np.fromiter((i for line in ids for i in line), dtype=np.uint16).tobytes())
        os.replace(tmp, path)
    return np.memmap(path, dtype=np.uint16, mode="r")


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: np.ndarray
    dev: np.ndarray


def prepare(data: str, data_dir: str = None, vocab_size: int = 16000, work_dir: str = "out",
            separator: str = "none", max_sentences: int = 2_000_000, verbose: bool = False) -> Corpus:
    """Tokenizer and token caches of a data set, built once and reused (idempotent)."""
    data_dir = data_dir or default_data_dir(data)
    train_files, dev_files = corpus_files(data, data_dir)
    cache_dir = os.path.join(work_dir, f"data-{data}")
    key = hash_files(train_files, extra=f"v{vocab_size}|{max_sentences}|{'words' if data == 'synthetic' else 'bpe'}")
    model_path = os.path.join(cache_dir, f"tokenizer-v{vocab_size}-{key[:8]}.model")
    t0 = time.time()
    if not os.path.isfile(model_path):
        os.makedirs(cache_dir, exist_ok=True)
        words = corpus_words(train_files) if data == "synthetic" else None  # the synthetic language: word pieces
        train_tokenizer(train_files, vocab_size, model_path, max_sentences, words)
        if verbose:
            print(f"tokenizer {model_path} trained in {time.time() - t0:.0f}s")
    tok = Tokenizer(model_path)
    return Corpus(tok, token_cache(tok, train_files, cache_dir, "train", separator),
                  token_cache(tok, dev_files, cache_dir, "dev", separator))


# ---------------------------------------------------------------------------------------------------------
# batches


class Batches:
    """Epochs over one token stream: each epoch draws an offset in [0, T) and a permutation of the T-token
    windows from a generator seeded by (seed, epoch), so a batch is a pure function of (epoch, step) and a run
    resumes exactly from that pair. With `fixed`, every epoch keeps the first epoch's offset (the same
    permutations): the same windows each epoch, which one teacher cache can key. A run of at most one epoch
    reads the same batches either way, and seeds still differ in where their windows fall. With `offset`,
    every epoch of every seed reads the windows at that offset (one teacher cache serves every seed); the
    seed still draws each epoch's permutation.
    With `world` > 1, rank r takes rows [r B/world, (r+1) B/world) of every global batch: disjoint shards
    of the epoch's permutation."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 fixed: bool = False, offset: int = None):
        self.tokens, self.T, self.B, self.seed, self.rank, self.world = tokens, seq_len, batch_size, seed, rank, world
        self.fixed, self.fixed_offset = bool(fixed) or offset is not None, offset
        self.n_seq = n_windows(len(tokens), seq_len)  # the same count whatever the offset
        if self.n_seq < batch_size:
            raise ValueError(f"corpus of {len(tokens):,} tokens holds {self.n_seq} sequences of {seq_len}, "
                             f"fewer than one batch of {batch_size}: lower --batch-size or use more data")
        if batch_size % world:
            raise ValueError(f"batch {batch_size} does not split over {world} processes")
        self.steps_per_epoch = self.n_seq // batch_size

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def offset(self, epoch: int) -> int:
        """The epoch's window offset: its generator's first draw (the first epoch's with `fixed`), or `offset`."""
        if self.fixed_offset is not None:
            return self.fixed_offset
        return int(torch.randint(0, self.T, (1,), generator=self._generator(0 if self.fixed else epoch)))

    def order(self, epoch: int):
        """(offset, permutation of the window ids) of an epoch."""
        g = self._generator(epoch)
        torch.randint(0, self.T, (1,), generator=g)  # the offset's draw, so the permutation follows it
        return self.offset(epoch), torch.randperm(self.n_seq, generator=g)

    def epoch_windows(self, epoch: int, start_step: int = 0):
        """Yields (window ids (B/world,), batch (B/world, T) int64) of an epoch from `start_step` to its end."""
        offset, perm = self.order(epoch)
        per_rank = self.B // self.world
        for step in range(start_step, self.steps_per_epoch):
            idx = perm[step * self.B + self.rank * per_rank: step * self.B + (self.rank + 1) * per_rank]
            yield idx, window_rows(self.tokens, idx, self.T, offset)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yields the batches (B/world, T) int64 of an epoch from `start_step` to its end."""
        return (rows for _, rows in self.epoch_windows(epoch, start_step))


def n_windows(n_tokens: int, seq_len: int) -> int:
    """Whole T-token windows at any offset in [0, T): one window short of n_tokens // T."""
    return (n_tokens - seq_len) // seq_len


def window_rows(tokens: np.ndarray, idx: torch.Tensor, seq_len: int, offset: int = 0) -> torch.Tensor:
    """Windows `idx` of the stream, tokens[offset + i T : offset + (i + 1) T], as (len(idx), T) int64."""
    starts = offset + idx.numpy() * seq_len
    return torch.from_numpy(np.stack([tokens[s:s + seq_len] for s in starts]).astype(np.int64))


def val_sequences(tokens: np.ndarray, seq_len: int, max_n: int = 8192) -> torch.Tensor:
    """(N, T) dev sequences at offset 0; a fixed seeded subset of at most `max_n`, the same for every model."""
    n = len(tokens) // seq_len
    idx = torch.arange(n)
    if n > max_n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))[:max_n].sort().values
    return window_rows(tokens, idx, seq_len)


# ---------------------------------------------------------------------------------------------------------
# download


def download(data: str, dest: str, downloads: dict = None):
    """Fetch the official archives, verify checksums, unpack *.train/*.dev/*.test into <dest>/<folder>/.
    Everything lands in a temp folder first, renamed into place only when complete."""
    downloads = downloads or DOWNLOADS
    if data not in downloads:
        raise ValueError(f"no download for data set {data!r}: use one of {', '.join(downloads)}")
    tmp = dest.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for url, sha, size in downloads[data]:
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                blob = r.read()
        except Exception as e:
            shutil.rmtree(tmp)
            raise ValueError(f"download of {url} failed ({e}); get the files by hand from {OFFICIAL[data]}") from None
        if (size and len(blob) != size) or (sha and hashlib.sha256(blob).hexdigest() != sha):
            shutil.rmtree(tmp)
            raise ValueError(f"{url}: size or sha256 mismatch, the download is damaged; retry or fetch from {OFFICIAL[data]}")
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            for name in z.namelist():
                parts = name.split("/")
                if "__MACOSX" in parts or not name.endswith((".train", ".dev", ".test")) or len(parts) < 2:
                    continue
                out = os.path.join(tmp, parts[-2], parts[-1])
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(z.read(name))
    if os.path.isdir(dest):
        for entry in os.listdir(tmp):  # merge into an existing folder, one finished sub-folder at a time
            shutil.rmtree(os.path.join(dest, entry), ignore_errors=True)
            os.replace(os.path.join(tmp, entry), os.path.join(dest, entry))
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, dest)
    print(f"BabyLM {data} unpacked into {dest}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["prepare", "download"])
    p.add_argument("--data", default="2024", choices=list(LAYOUTS))
    p.add_argument("--data-dir", default=None, help="default: $BABYLM_DIR (2024) / $BABYLM_2023_DIR, else data/babylm_<data>")
    p.add_argument("--dest", default=None, help="download target (default: data/babylm_<data>)")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--max-sentences", type=int, default=2_000_000)
    p.add_argument("--separator", default="none", choices=["none", "bos", "eos", "both"])
    p.add_argument("--work-dir", default="out")
    a = p.parse_args(argv)
    if a.command == "download":
        return download(a.data, a.dest or os.path.join("data", f"babylm_{a.data}"))
    t0 = time.time()
    data_dir = a.data_dir or default_data_dir(a.data)
    c = prepare(a.data, data_dir, a.vocab_size, a.work_dir, a.separator, a.max_sentences, verbose=True)
    train_files, dev_files = corpus_files(a.data, data_dir)
    print(f"{'file':32s} {'words':>11s} {'tokens':>11s}")
    for f in train_files + dev_files:
        lines = read_clean_lines(f)
        words = sum(len(line.split()) for line in lines)
        tokens = sum(len(ids) for ids in c.tokenizer.encode(lines))
        print(f"{os.path.relpath(f, data_dir):32s} {words:>11,} {tokens:>11,}")
    print(f"train {len(c.train):,} tokens, dev {len(c.dev):,} tokens, vocab {c.tokenizer.vocab_size}, "
          f"tokenizer {c.tokenizer.path}, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    guard(main)()
