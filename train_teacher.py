"""Pretrain the teachers (README "Teachers"): LLaMA-360M and GPT-2-705M on BabyLM strict-small, plain
next-token cross-entropy (eq. 10). The run machinery it shares with distill.py lives in training.py.

    python train_teacher.py --preset debug --data synthetic --max-steps 50               # CPU smoke run
    BABYLM_DIR=../shared/data/corpus python train_teacher.py --preset llama-small --max-steps 300
    python train_teacher.py --preset llama-360m --data 2024                               # paper, GPU
    torchrun --nproc_per_node 8 train_teacher.py --preset gpt2-705m --data 2024           # multi-GPU

Shape legend: B batch (sequences), T time, V vocab.
"""
import os

import torch

import model as M
from cli import guard, parse_config
from losses import cross_entropy
from runtime import autocast_ctx, resolve_precision
from training import Run, TrainConfig, next_token_targets

TEACHER_LR = {"llama": 3e-4, "gpt2": 2.5e-4}  # README "Teachers", by architecture


def train(cfg: TrainConfig) -> dict:
    cfg.validate()  # every flag checked before any file is written
    cfg.out_dir = cfg.out_dir or os.path.join(cfg.work_dir, f"teacher-{cfg.preset}-{cfg.data}")
    run = Run(cfg)
    mcfg = M.get_config(cfg.preset, vocab_size=run.corpus.tokenizer.vocab_size,
                        **({"dropout": cfg.dropout} if cfg.dropout is not None else {}))
    model = M.build_model(mcfg, seed=cfg.seed).to(run.device)
    lr, precision = cfg.lr or TEACHER_LR[mcfg.arch], resolve_precision(cfg.precision, run.device, mcfg.dim)
    run.start(model, lr, precision)
    fwd = torch.compile(model) if cfg.compile else model
    if run.rank == 0:
        print(f"{cfg.preset}: {model.num_params():,} params | {precision} on {run.device} | {run.total} steps of "
              f"{cfg.batch_size}x{cfg.seq_len} tokens ({run.accum} x {run.micro} per process, {run.world} "
              f"process(es)) | lr {lr:g} | out {cfg.out_dir}")
    for epoch, windows, batch in run.steps():
        loss_sum = 0.0
        for _, x in run.micro_batches(windows, batch):  # gradient accumulation
            with autocast_ctx(run.device, precision):
                logits = fwd(x)  # (b, T, V)
            loss = cross_entropy(logits, next_token_targets(x))  # eq. 10
            run.backward(loss)
            loss_sum = loss_sum + loss.detach()  # no host sync per micro-batch
        run.end_step(epoch, loss=loss_sum)
    return run.close()


@guard
def main(argv=None):
    summary = train(parse_config(TrainConfig, argv, __doc__))
    print(f"done: {summary}")


if __name__ == "__main__":
    main()
