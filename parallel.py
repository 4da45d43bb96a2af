"""Several processes (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): process setup, the broadcast of rank 0's
weights, the bucketed gradient reducer, and the reductions and gathers of logged numbers and RNG states.
Every helper is a no-op for one process.
"""
import os

import torch
import torch.distributed as dist


def setup_distributed(device: torch.device):
    """(rank, world); the backend follows the run's device (nccl for cuda, gloo otherwise), and each GPU
    process is pinned to its LOCAL_RANK device."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", 0)), world


def broadcast_params(model, world: int):
    """Every process starts from rank 0's weights."""
    if world > 1:
        for t in model.state_dict().values():
            dist.broadcast(t, 0)


class GradReducer:
    """Averages gradients over processes as DDP does, written out because DDP's reducer allows one backward
    per forward and the step-wise loss runs one per chunk. Gradients live as views into flat buckets of
    about 25 MB (no copies); in the step's last micro-batch, the post-accumulate-grad hook of each gradient's
    last accumulation marks it ready, and a bucket whose gradients are all ready starts its all-reduce
    asynchronously, in bucket order on every rank, while the rest of the backward runs. `accumulations`
    maps a parameter to how many backward passes reach it per micro-batch (the output head: one per chunk;
    everything else: one). With one process it does nothing but zero the gradients."""

    def __init__(self, model, world: int, accumulations: dict = None, bucket_mb: float = 25):
        self.world, self.params = world, [p for p in model.parameters() if p.requires_grad]
        if world == 1:
            return
        buckets, current, size = [], [], 0
        for p in reversed(self.params):  # the backward reaches the last layers first
            current.append(p)
            size += p.numel() * p.element_size()
            if size >= bucket_mb * 2 ** 20:
                buckets.append(current)
                current, size = [], 0
        buckets += [current] if current else []
        self.flats, self.bucket_of = [], {}
        for i, ps in enumerate(buckets):
            flat = torch.zeros(sum(p.numel() for p in ps), dtype=ps[0].dtype, device=ps[0].device)
            offset = 0
            for p in ps:  # autograd accumulates into an existing .grad in place: the view stays a view
                p.grad = flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
                self.bucket_of[p] = i
                p.register_post_accumulate_grad_hook(self._hook)
            self.flats.append(flat)
        self.sizes = [len(ps) for ps in buckets]
        self.expected = {p: (accumulations or {}).get(p, 1) for p in self.params}
        self.armed = False
        self._reset()

    def _reset(self):
        self.counts, self.ready, self.works, self.next = {}, [0] * len(self.flats), [None] * len(self.flats), 0

    def arm(self):
        """Call before the backward of the step's last micro-batch."""
        self.armed = self.world > 1

    def _hook(self, p):
        if not self.armed:
            return
        self.counts[p] = self.counts.get(p, 0) + 1
        if self.counts[p] > self.expected[p]:
            raise RuntimeError("a gradient was accumulated after its bucket's all-reduce started: the "
                               "accumulation count per micro-batch given to GradReducer is wrong")
        if self.counts[p] == self.expected[p]:
            i = self.bucket_of[p]
            self.ready[i] += 1
            while self.next < len(self.flats) and self.ready[self.next] == self.sizes[self.next]:
                self._launch(self.next)  # in bucket order: every rank issues the same collectives in turn

    def _launch(self, i: int):
        self.works[i] = dist.all_reduce(self.flats[i], async_op=True)
        self.next = max(self.next, i + 1)

    def finish(self):
        """After the last backward: start what is left, wait for everything, average."""
        if self.world == 1:
            return
        for i in range(self.next, len(self.flats)):  # buckets whose hooks did not all fire (unused parameters)
            self._launch(i)
        for work, flat in zip(self.works, self.flats):
            work.wait()
            flat.div_(self.world)
        self.armed = False
        self._reset()

    def zero_grad(self, optimizer):
        if self.world == 1:
            optimizer.zero_grad(set_to_none=True)
        else:  # keep the bucket views
            for flat in self.flats:
                flat.zero_()


def global_mean(values: list, world: int, device=None) -> list:
    """Average logged numbers over processes, so rank 0 logs the loss of the whole global batch. Reduced
    on the training device: under nccl only CUDA tensors have a backend."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def gather_objects(obj, world: int) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a collective: every rank must call it)."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


GLOBAL_STREAM, SAMPLER_STREAM = 0, 2  # what draws from a seed stream: the process's global RNGs, the sampler


def rank_seed(seed: int, rank: int = 0, stream: int = GLOBAL_STREAM, step: int = 0) -> int:
    """The one mixing of per-rank seed streams: every rank, stream and reseeded step gets its own seed, and
    rank 0 at step 0 keeps seed + stream (one process draws as it always did)."""
    return seed + stream + 7919 * rank + 100_003 * step
