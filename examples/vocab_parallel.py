"""A vocabulary-parallel sampled softmax in your own model, without the trainer.

    .venv/bin/torchrun --nproc_per_node=2 examples/vocab_parallel.py [--classes 1000000] [--steps 50]

Each process holds V / world rows of the output table; the model (here a small MLP) is replicated and sees the same
batch on every rank (tensor parallelism over the classes, as Megatron's vocab-parallel cross entropy). Rank 0 prints
the loss and, at the end, the exact full-softmax NLL computed across the shards. Works with world size 1 too
(`python examples/vocab_parallel.py` sets up a one-process group).
"""

import argparse
import os

import torch
import torch.distributed as dist

from sampledsoftmax.parallel import VocabParallelSampledSoftmaxLoss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--num-sampled", type=int, default=4096)
    args = ap.parse_args()
    if "RANK" not in os.environ:  # plain `python examples/vocab_parallel.py`: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29511")
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)  # the replicated model starts identical on every rank
    V, d = args.classes, args.dim
    # a toy task: the class is a fixed random function of the features, so the loss can fall
    teacher = torch.randn(64, V // 1000 + 1, generator=torch.Generator().manual_seed(7))
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, d)).to(device)
    loss_fn = VocabParallelSampledSoftmaxLoss(V, d, num_sampled=args.num_sampled, sparse=True).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    opt_out = torch.optim.SparseAdam(list(loss_fn.parameters()), lr=3e-3)  # sparse rows of this rank's shard
    g = torch.Generator().manual_seed(1)  # the same batches on every rank of the group
    for step in range(args.steps):
        x = torch.randn(512, 64, generator=g)
        y = (x @ teacher).argmax(-1) * 1000 % V  # V // 1000 distinct classes spread over every shard
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)  # the same value on every rank
        opt.zero_grad()
        opt_out.zero_grad()
        loss.backward()  # the model's gradients are complete on every rank; each shard gets its own rows
        opt.step()
        opt_out.step()
        if dist.get_rank() == 0 and step % 10 == 0:
            print(f"step {step}: sampled loss {loss.item():.3f}", flush=True)
    with torch.no_grad():
        nll = loss_fn.exact_nll(model(x), y).mean()  # the exact softmax over all V classes, shards combined
    if dist.get_rank() == 0:
        print(f"world {dist.get_world_size()}: {loss_fn.weight.shape[0]:,} of {V:,} rows per rank; "
              f"exact NLL {nll.item():.3f} (log V = {torch.log(torch.tensor(float(V))).item():.3f})")
    dist.barrier()  # every rank is done before any tears down its connections (gloo aborts a peer otherwise)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
