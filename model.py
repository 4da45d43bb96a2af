"""The models of the paper (README "Models"): a hand-written LLaMA (student and teacher 1) and GPT-2
(teacher 2), with a KV-cache sampler and atomic checkpoints (the Hugging Face export is export.py).

    python model.py                                  # parameter count of every preset

Shape legend: B batch, T time, C = dim, H heads, K kv heads, D head_dim, V vocab, F ffn hidden.
RoPE uses the Hugging Face "half-split" pairing: dimension i is rotated with dimension i + D/2, so the
export to `LlamaForCausalLM` needs no q/k permutation (Meta's checkpoints pair 2i with 2i+1).
"""
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    arch: str = "llama"  # "llama" (RMSNorm, RoPE, SwiGLU) or "gpt2" (LayerNorm, learned positions, GELU)
    dim: int = 512
    n_layers: int = 16
    n_heads: int = 8
    n_kv_heads: int = 8
    hidden_dim: int = 1024
    vocab_size: int = 16000
    max_seq_len: int = 256
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    dropout: float = 0.0  # only the GPT-2 teacher has any (0.1 while it trains)

    def __post_init__(self):
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"unknown arch {self.arch!r}: use 'llama' or 'gpt2'")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim {self.dim} / heads {self.n_heads} / kv heads {self.n_kv_heads} do not divide")
        if (self.dim // self.n_heads) % 2:
            raise ValueError("head_dim must be even for RoPE")
        if self.arch == "gpt2" and self.n_kv_heads != self.n_heads:
            raise ValueError("gpt2 has no grouped kv heads: set n_kv_heads = n_heads")


def _llama(dim, hidden, layers, heads, kv_heads=None, **kw):
    return ModelConfig("llama", dim, layers, heads, kv_heads or heads, hidden, **kw)


def _gpt2(dim, hidden, layers, heads, **kw):
    return ModelConfig("gpt2", dim, layers, heads, heads, hidden, norm_eps=1e-5, tie_embeddings=True,
                       dropout=0.1, **kw)


# The paper's three models (Baby Llama's configs) and CPU-sized versions of the same architectures.
PRESETS = {
    "baby-llama-58m": _llama(512, 1024, 16, 8),      # student, 58,343,936 params
    "llama-360m": _llama(1024, 3072, 24, 8),         # teacher 1, 359,973,888
    "gpt2-705m": _gpt2(1536, 6144, 24, 16),          # teacher 2, 704,928,768
    "baby-llama-small": _llama(128, 256, 4, 4),      # CPU student
    "llama-small": _llama(256, 768, 6, 4),           # CPU teacher 1
    "gpt2-small": _gpt2(256, 1024, 6, 4),            # CPU teacher 2
    # the synthetic experiment (lab/README.md): teachers that learn the language, and one-layer students of
    # five widths (d: width; d32 is baby-llama-syn), from far too small to copy them to nearly able to
    "llama-syn": _llama(128, 384, 4, 4, vocab_size=512, max_seq_len=128),
    "gpt2-syn": _gpt2(128, 512, 4, 4, vocab_size=512, max_seq_len=128),
    "baby-llama-syn": _llama(32, 64, 1, 2, vocab_size=512, max_seq_len=128),
    "baby-llama-syn-d4": _llama(4, 8, 1, 2, vocab_size=512, max_seq_len=128),
    "baby-llama-syn-d8": _llama(8, 16, 1, 2, vocab_size=512, max_seq_len=128),
    "baby-llama-syn-d16": _llama(16, 32, 1, 2, vocab_size=512, max_seq_len=128),
    "baby-llama-syn-d64": _llama(64, 128, 1, 2, vocab_size=512, max_seq_len=128),
    "debug": _llama(64, 128, 2, 4, kv_heads=2, vocab_size=512, max_seq_len=128),
    "debug-gpt2": _gpt2(64, 128, 2, 4, vocab_size=512, max_seq_len=128),
}


def get_config(preset: str, **overrides) -> ModelConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**asdict(PRESETS[preset]), **overrides})


def precompute_rope(head_dim: int, max_seq_len: int, theta: float):
    """cos, sin tables of shape (max_seq_len, head_dim), in fp32, for the half-split pairing."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (S, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (S, D): dims i and i + D/2 share an angle
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated in fp32: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), cast back."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalise in fp32 (bf16 squares lose precision), cast back, then scale
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


@dataclass
class KVCache:
    """Per-layer keys and values, (B, K, S, D) each, filled up to `pos`."""
    k: list
    v: list
    pos: int = 0


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        bias = cfg.arch == "gpt2"
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.dim // cfg.n_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=bias)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=bias)
        self.dropout = cfg.dropout
        self.use_rope = cfg.arch == "llama"

    def forward(self, x, cos, sin, cache: Optional[KVCache] = None, layer: int = 0, last: bool = False):
        """x (B, T, C) -> (B, T, C); with `last`, only the last position's output (B, 1, C), every position's
        keys and values still computed (and cached)."""
        B, T, _ = x.shape
        Tq = 1 if last else T
        q = self.wq(x[:, -Tq:]).view(B, Tq, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, Tq, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        if self.use_rope:
            q, k = apply_rope(q, cos[-Tq:], sin[-Tq:]), apply_rope(k, cos, sin)
        mask, causal = None, Tq > 1  # one query at the last position sees every key
        if cache is not None:
            p = cache.pos
            cache.k[layer][:, :, p:p + T] = k
            cache.v[layer][:, :, p:p + T] = v
            k = cache.k[layer][:, :, :p + T].to(q.dtype)  # (B, K, p+T, D); a no-op when dtypes agree
            v = cache.v[layer][:, :, :p + T].to(q.dtype)
            if p > 0:  # SDPA's is_causal aligns top-left; new queries see the whole past plus their own prefix
                causal = False
                mask = torch.ones(T, p + T, dtype=torch.bool, device=x.device).tril(diagonal=p) if Tq > 1 else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_heads != self.n_heads)  # (B, H, Tq, D)
        y = y.transpose(1, 2).reshape(B, Tq, -1)  # (B, Tq, C)
        return F.dropout(self.wo(y), self.dropout, self.training)


class FeedForward(nn.Module):
    """SwiGLU for llama: w2(silu(w1 x) * w3 x); GELU(tanh) MLP for gpt2: w2(gelu(w1 x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.arch == "llama"
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=not self.swiglu)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=not self.swiglu)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False) if self.swiglu else None
        self.dropout = cfg.dropout

    def forward(self, x):
        h = F.silu(self.w1(x)) * self.w3(x) if self.swiglu else F.gelu(self.w1(x), approximate="tanh")  # (B, T, F)
        return F.dropout(self.w2(h), self.dropout, self.training)


def _norm(cfg: ModelConfig) -> nn.Module:
    return RMSNorm(cfg.dim, cfg.norm_eps) if cfg.arch == "llama" else nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm, self.attention = _norm(cfg), Attention(cfg)
        self.ffn_norm, self.feed_forward = _norm(cfg), FeedForward(cfg)

    def forward(self, x, cos, sin, cache=None, layer=0, last=False):
        a = self.attention(self.attention_norm(x), cos, sin, cache, layer, last)  # pre-norm residuals
        x = (x[:, -1:] if last else x) + a  # `last`: the last position's residual stream from here on
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embeddings = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.arch == "gpt2" else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # RoPE tables are derived, so not saved; rebuilt on every construction (torchtitan #1371)
        cos, sin = precompute_rope(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if not self.output.weight.is_meta:
            self.init_weights(seed)

    def _apply(self, fn, recurse=True):
        """.to(dtype) / .to(device) cast every buffer; the RoPE tables are rebuilt in fp32 afterwards, so a
        bf16 teacher or sampler rotates exactly as the fp32 student does (not with bf16-rounded tables)."""
        super()._apply(fn, recurse)
        if not self.rope_cos.is_meta:
            cos, sin = precompute_rope(self.config.dim // self.config.n_heads, self.config.max_seq_len,
                                       self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)
        return self

    @torch.no_grad()
    def init_weights(self, seed: int = 0):
        """N(0, 0.02), residual projections at 0.02/sqrt(2 n_layers) (GPT-2), norms 1, biases 0."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                std = resid_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is one parameter, counted once

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        cfg = self.config
        device = device or self.output.weight.device
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.dim // cfg.n_heads)
        return KVCache([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                       [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)])

    def hidden(self, tokens: torch.Tensor, cache: Optional[KVCache] = None, last: bool = False) -> torch.Tensor:
        """Final-norm hidden states (B, T, C); `head` turns them into logits. With `last`, the last position's
        (B, 1, C): the last layer then runs attention output and feed-forward for that position alone (the
        cache still receives every position's keys and values), as a sampler's prefill needs."""
        B, T = tokens.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len {self.config.max_seq_len}")
        x = self.tok_embeddings(tokens)  # (B, T, C)
        if self.pos_embeddings is not None:
            x = x + self.pos_embeddings(torch.arange(start, start + T, device=tokens.device))
        x = F.dropout(x, self.config.dropout, self.training)
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i, last and i == len(self.layers) - 1)
        if cache is not None:
            cache.pos += T
        return self.norm(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(h)  # (B, T, V)

    def forward(self, tokens: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V) at every position."""
        return self.head(self.hidden(tokens, cache))


def build_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    return Transformer(cfg, seed)


@torch.no_grad()
def generate(models, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, mix: Optional[Callable[[list], torch.Tensor]] = None,
             generator: Optional[torch.Generator] = None, return_logits: bool = False,
             stop_token: Optional[int] = None):
    """Sample `max_new_tokens` after `prompt` (B, P), each model stepping its own KV cache in lock-step.

    `models` is one model or a list; `mix(list of (B, V) last-position logits) -> (B, V)` picks the
    distribution to sample from (default: the first model's). With `return_logits`, also returns each
    model's logits at the sampled steps, (B, max_new_tokens, V) in fp32: the predictions for the new tokens.
    Temperature 0 is greedy. With `stop_token`, decoding ends early once every row has emitted it (the
    rows are returned as long as the longest; what follows a row's stop token is not meaningful).
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    B, P = prompt.shape
    caches = [m.new_cache(B, P + max_new_tokens, device=prompt.device, dtype=m.output.weight.dtype) for m in models]
    x, new, seen = prompt, [], [[] for _ in models]
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)  # rows that emitted stop_token
    for _ in range(max_new_tokens):
        # the last position only: the prompt's other predictions are not needed
        logits = [m.head(m.hidden(x, cache=c, last=True)[:, -1]).float() for m, c in zip(models, caches)]  # (B, V)
        for s, z in zip(seen, logits):
            s.append(z)
        z = mix(logits) if mix is not None else logits[0]
        if temperature == 0:
            x = z.argmax(-1, keepdim=True)  # (B, 1)
        else:
            z = z / temperature
            if top_k is not None:
                kth = torch.topk(z, min(top_k, z.size(-1))).values[:, -1:]
                z = z.masked_fill(z < kth, float("-inf"))
            # Gumbel-max: argmax(z + g), g = -log(-log u), samples softmax(z) exactly; unlike cumsum and
            # searchsorted it has a deterministic CUDA kernel (--deterministic with the single-step term)
            u = torch.rand(z.shape, generator=generator, device=z.device).clamp_(min=torch.finfo(z.dtype).tiny)
            x = (z - torch.log(-torch.log(u))).argmax(-1, keepdim=True)  # (B, 1)
        new.append(x)
        if stop_token is not None:
            done = done | (x[:, 0] == stop_token)  # (B,)
            if bool(done.all()):
                break
    tokens = torch.cat([prompt, *new], dim=1)  # (B, P + N)
    if return_logits:
        return tokens, [torch.stack(s, dim=1) for s in seen]
    return tokens


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def atomic_write(path: str, data):
    """Write `data` (bytes, or a function of the open binary file) to a temp file in the same folder, then
    rename: a crash never leaves half a file (checkpoints, configs, results, reports)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        data(f) if callable(data) else f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save(obj, path: str):
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def read_checkpoint(path: str, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint dict, turning a missing or damaged file into one clear ValueError."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} not found: train it first or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as e:  # truncated zip, pickle error, ...
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}): it is truncated or "
                         f"corrupt; delete it and retrain or resume from another checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of this project (no model / model_config)")
    return ckpt


def save_model(model: Transformer, path: str, **extra):
    """One file: model config, weights and any extra entries (tokenizer hash, train config ...)."""
    atomic_save({"model_config": asdict(model.config), "model": model.state_dict(), **extra}, path)


def load_model(path: str, device="cpu") -> tuple:
    """(model, checkpoint dict) from a file written by save_model or a training script."""
    # mmap: tensors are read when touched, so a teacher's optimizer state (8.5 GB for gpt2-705m) is never
    # read into host memory when only its weights are wanted
    ckpt = read_checkpoint(path, mmap=True)
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device), ckpt


def main(argv: Sequence[str] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        for name, cfg in PRESETS.items():
            with torch.device("meta"):
                n = Transformer(cfg).num_params()
            print(f"{name:18s} {cfg.arch:5s} {n:>13,}")
    else:
        raise ValueError("usage: python model.py   (the presets and their parameter counts; exports: export.py)")


if __name__ == "__main__":
    from cli import guard
    guard(main)()
