"""A checkpoint as a folder Hugging Face transformers loads as is (README "Reproducing the paper on a GPU"): config.json and
model.safetensors for LlamaForCausalLM or GPT2LMHeadModel (the same logits), the SentencePiece model, and a
fast tokenizer (data.hf_tokenizer_files) that encodes as this project does. transformers is not needed to
write it.

    python export.py out/ChooBaCa-rv-1-24+/ckpt_best.pt hf/ChooBaCa-rv-1-24+
"""
import json
import os
import shutil
import sys
from typing import Optional, Sequence

import torch

from cli import guard
from data import hf_tokenizer_files
from model import Transformer, load_model


def _hf_llama(model: Transformer):
    c, sd = model.config, model.state_dict()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
              "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
              "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
              "head_dim": c.dim // c.n_heads, "vocab_size": c.vocab_size,
              "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
              "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
              "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
              "tie_word_embeddings": c.tie_embeddings}
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"]}
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["output.weight"]
    names = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
             "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
             "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
             "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    for i in range(c.n_layers):
        for ours, theirs in names.items():
            out[f"model.layers.{i}.{theirs}.weight"] = sd[f"layers.{i}.{ours}.weight"]
    return config, out


def _hf_gpt2(model: Transformer):
    c, sd = model.config, model.state_dict()
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c.dim, "n_layer": c.n_layers,
              "n_head": c.n_heads, "n_inner": c.hidden_dim, "vocab_size": c.vocab_size,
              "n_positions": c.max_seq_len, "layer_norm_epsilon": c.norm_eps, "activation_function": "gelu_new",
              "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
              "tie_word_embeddings": True}
    out = {"transformer.wte.weight": sd["tok_embeddings.weight"], "transformer.wpe.weight": sd["pos_embeddings.weight"],
           "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": sd["norm.bias"]}
    for i in range(c.n_layers):
        p, h = f"layers.{i}.", f"transformer.h.{i}."
        # HF's Conv1D stores weights as (in, out): transpose our nn.Linear (out, in)
        out[h + "attn.c_attn.weight"] = torch.cat([sd[p + f"attention.{w}.weight"] for w in ("wq", "wk", "wv")]).t()
        out[h + "attn.c_attn.bias"] = torch.cat([sd[p + f"attention.{w}.bias"] for w in ("wq", "wk", "wv")])
        for ours, theirs in {"attention.wo": "attn.c_proj", "feed_forward.w1": "mlp.c_fc",
                             "feed_forward.w2": "mlp.c_proj"}.items():
            out[h + theirs + ".weight"] = sd[p + ours + ".weight"].t()
            out[h + theirs + ".bias"] = sd[p + ours + ".bias"]
        for ours, theirs in {"attention_norm": "ln_1", "ffn_norm": "ln_2"}.items():
            out[h + theirs + ".weight"], out[h + theirs + ".bias"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
    return config, out


def export_hf(model: Transformer, out_dir: str, tokenizer_model: Optional[str] = None):
    from safetensors.torch import save_file
    config, tensors = (_hf_llama if model.config.arch == "llama" else _hf_gpt2)(model)
    config.update({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"})
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # a failed export leaves no .tmp folder behind
        os.makedirs(tmp)
        save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
                  os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if tokenizer_model:  # SentencePiece's file, and the fast tokenizer AutoTokenizer loads with no extra package
            shutil.copy(tokenizer_model, os.path.join(tmp, "tokenizer.model"))
            for name, obj in hf_tokenizer_files(tokenizer_model, model.config.max_seq_len).items():
                with open(os.path.join(tmp, name), "w") as f:
                    json.dump(obj, f, ensure_ascii=False)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: Sequence[str] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        raise ValueError("usage: python export.py CHECKPOINT OUT_DIR")
    out = os.path.abspath(argv[1])
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{argv[1]} exists and is not a folder: give a folder path for the export")
    if not os.access(os.path.dirname(out), os.W_OK):
        raise ValueError(f"cannot write in {os.path.dirname(out)}: give a folder path in a writable folder")
    model, ckpt = load_model(argv[0])
    tok = ckpt.get("tokenizer_path")
    export_hf(model, argv[1], tok if tok and os.path.isfile(tok) else None)
    print(f"exported {argv[0]} ({model.config.arch}, {model.num_params():,} params) to {argv[1]}")


if __name__ == "__main__":
    guard(main)()
