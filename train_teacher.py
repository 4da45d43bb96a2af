"""Pretrain the teachers (README "Teachers"): LLaMA-360M and GPT-2-705M on BabyLM strict-small, plain
next-token cross-entropy (eq. 10). The run machinery it shares with distill.py lives in runtime.py.

    python train_teacher.py --preset debug --data synthetic --max-steps 50               # CPU smoke run
    BABYLM_DIR=../shared/data/corpus python train_teacher.py --preset llama-small --max-steps 300
    python train_teacher.py --preset llama-360m --data 2024                               # paper, GPU
    torchrun --nproc_per_node 8 train_teacher.py --preset gpt2-705m --data 2024           # multi-GPU

Shape legend: B batch (sequences), T time, V vocab.
"""
import os
import time

import torch
from tqdm import tqdm

import model as M
from cli import guard
from losses import cross_entropy
from parallel import GradReducer, broadcast_params, global_mean, rank_seed
from runtime import (RunLog, TrainConfig, autocast_ctx, check_finite, check_resume, configure_optimizer,
                     estimate_val_loss, get_device, get_lr, load_checkpoint, next_token_targets, parse_config,
                     prepare_run, resolve_precision, save_checkpoint, save_snapshot, set_determinism, set_seed)

TEACHER_LR = {"llama": 3e-4, "gpt2": 2.5e-4}  # README "Teachers", by architecture


def train(cfg: TrainConfig) -> dict:
    cfg.validate()  # every flag checked before any file is written
    cfg.out_dir = cfg.out_dir or os.path.join(cfg.work_dir, f"teacher-{cfg.preset}-{cfg.data}")
    last = os.path.join(cfg.out_dir, "ckpt_last.pt")
    check_resume(cfg, last)
    if cfg.deterministic:
        set_determinism()
    set_seed(cfg.seed)
    device = get_device(cfg.device)
    corpus, batches, val, micro, accum, rank, world = prepare_run(cfg, device)
    mcfg = M.get_config(cfg.preset, vocab_size=corpus.tokenizer.vocab_size,
                        **({"dropout": cfg.dropout} if cfg.dropout is not None else {}))
    model = M.build_model(mcfg, seed=cfg.seed).to(device)
    lr = cfg.lr or TEACHER_LR[mcfg.arch]
    total = batches.steps_per_epoch * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    precision = resolve_precision(cfg.precision, device, mcfg.dim)
    optimizer = configure_optimizer(model, lr, cfg.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step, best_val = 0, float("inf")
    if cfg.resume and os.path.isfile(last):
        ckpt = load_checkpoint(last, model, optimizer, scaler, rank, world, device)
        step, best_val = ckpt["step"], ckpt["best_val"]
    log = RunLog(cfg.out_dir, step if cfg.resume else -1, enabled=rank == 0)
    model.train()
    broadcast_params(model, world)
    if world > 1:  # every rank its own dropout stream (the weights are rank 0's, just broadcast)
        torch.manual_seed(rank_seed(cfg.seed, rank))
    reducer = GradReducer(model, world)  # gradients averaged over processes (a no-op for one)
    fwd = torch.compile(model) if cfg.compile else model
    if rank == 0:
        print(f"{cfg.preset}: {model.num_params():,} params | {precision} on {device} | {total} steps of "
              f"{cfg.batch_size}x{cfg.seq_len} tokens ({accum} x {micro} per process, {world} process(es)) | "
              f"lr {lr:g} | out {cfg.out_dir}")
    bar = tqdm(total=total, initial=step, disable=rank != 0, unit="step", dynamic_ncols=True)
    t_last, since, skipped = time.perf_counter(), 0, 0
    limit = min(total, cfg.stop_after or total)
    while step < limit:
        epoch, start = divmod(step, batches.steps_per_epoch)
        for batch in batches.epoch(epoch, start):
            lr_now = get_lr(step, lr, cfg.warmup, total, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            loss_mean = 0.0  # over the micro-batches: the loss of the whole batch
            for i, x in enumerate(batch.to(device).split(micro)):  # gradient accumulation
                if i == accum - 1:
                    reducer.arm()  # the last micro-batch: buckets all-reduce as their gradients complete
                with autocast_ctx(device, precision):
                    logits = fwd(x)  # (b, T, V)
                loss = cross_entropy(logits, next_token_targets(x))
                scaler.scale(loss / accum).backward()
                loss_mean += loss.detach() / accum  # no host sync per micro-batch
            loss_mean, = global_mean([float(loss_mean)], world, device)
            check_finite(loss_mean, step, precision)
            reducer.finish()
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            skipped += int(scaler.is_enabled() and scaler.get_scale() < scale_before)  # fp16 inf/NaN: step skipped
            reducer.zero_grad(optimizer)
            step, since = step + 1, since + 1
            bar.update(1)
            end_of_epoch = step % batches.steps_per_epoch == 0 or step == total
            if rank == 0 and (step % cfg.log_every == 0 or end_of_epoch):
                tok_s = since * cfg.batch_size * cfg.seq_len / (time.perf_counter() - t_last)
                bar.set_postfix(loss=f"{loss_mean:.3f}", tok_s=f"{tok_s:,.0f}")
                log.write(step=step, epoch=epoch, loss=loss_mean, lr=lr_now, grad_norm=norm, tok_s=tok_s,
                          skipped_steps=skipped)
                t_last, since = time.perf_counter(), 0
            t_pause = time.perf_counter()  # validation and checkpoints do not count against tokens/s
            if end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0):
                val_loss = estimate_val_loss(model, val, micro, device, precision, rank, world)
                log.write(step=step, epoch=epoch, val_loss=val_loss)
                if rank == 0:
                    tqdm.write(f"step {step}/{total} | epoch {epoch} | val loss {val_loss:.4f}")
                if val_loss < best_val:  # the same on every rank: validation is all-reduced
                    best_val = val_loss
                    save_checkpoint(os.path.join(cfg.out_dir, "ckpt_best.pt"), model, optimizer, scaler, step,
                                    cfg, best_val, corpus.tokenizer, rank, world, device)
            stopping = step >= limit
            if step % cfg.ckpt_every == 0 or end_of_epoch or stopping:
                save_checkpoint(last, model, optimizer, scaler, step, cfg, best_val, corpus.tokenizer, rank, world,
                                device)
            if rank == 0:
                save_snapshot(cfg, model, step, corpus.tokenizer)
            t_last += time.perf_counter() - t_pause
            if stopping:
                break
    bar.close()
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"step": step, "best_val": best_val, "precision": precision, "out_dir": cfg.out_dir}


@guard
def main(argv=None):
    summary = train(parse_config(TrainConfig, argv, __doc__))
    print(f"done: {summary}")


if __name__ == "__main__":
    main()
