"""Fine-tune ViTForImageClassification, or pretrain ViTForMaskedImageModeling with SimMIM, in PyTorch.

    python examples/train_pt.py --data DATA --out OUT [--task classify|simmim] [--model DIR] [--epochs 3]
        [--batch-size 8] [--lr 1e-3] [--warmup-steps 5] [--save-every 10] [--resume] [--mixed-precision bf16]

A plain loop: augmentation, a warmup-then-cosine learning rate, a progress bar with loss and throughput,
evaluation accuracy after every epoch, a checkpoint every N steps, and an exact resume after interruption.
Data-parallel across processes: `torchrun --nproc-per-node N examples/train_pt.py ...` (see the README).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(__file__))
from data import (  # noqa: E402
    ImageFolder,
    accuracy,
    parse_and_open,
    pretrained_arguments,
    random_masks,
    small_config,
    training_arguments,
    warmup_cosine,
)

from vit import ViTForImageClassification, ViTForMaskedImageModeling  # noqa: E402


def build(args, classes: list[str]):
    cls = ViTForMaskedImageModeling if args.task == "simmim" else ViTForImageClassification
    if args.model:
        return cls.from_pretrained(args.model, **pretrained_arguments(args, classes))
    return cls(small_config(len(classes), args.image_size, classes))


def main() -> None:
    args, processor, data = parse_and_open(training_arguments(__doc__))
    torch.manual_seed(args.seed)
    # Under torchrun every process takes its share of each global batch; DDP averages the gradients.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    model = build(args, data.classes)
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # fused=True: one kernel over all parameters instead of a Python loop, as HF's Trainer does with torch >= 2.8
    # (README, "Training speed: where the time goes").
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05, fused=True)
    steps_per_epoch = data.steps_per_epoch(args.batch_size)
    total = args.epochs * steps_per_epoch
    ckpt_dir = os.path.join(args.out, "checkpoint")
    step = 0
    if args.resume and os.path.isdir(ckpt_dir):
        state = torch.load(os.path.join(ckpt_dir, "trainer_state.pt"), weights_only=True)
        model.load_state_dict(type(model).from_pretrained(ckpt_dir).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])
        print(f"resumed from step {step}", file=sys.stderr)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16")
    stop = min(total, args.max_steps or total)
    losses = []
    bar = tqdm(total=stop, initial=step, unit="step", file=sys.stderr, disable=None if rank == 0 else True)
    while step < stop:
        epoch, index = divmod(step, steps_per_epoch)
        model.train()
        pixels, labels = data.train_batch(epoch, index, args.batch_size)
        masks = random_masks(np.random.default_rng([args.seed, step, 2]), len(pixels), model.config.num_patches)
        weight = 1.0
        if world > 1:  # this process's contiguous share of the global batch
            share = np.array_split(np.arange(len(pixels)), world)[rank]
            # DDP averages the processes' gradients; weighting by share size makes that the whole batch's mean.
            weight = len(share) * world / len(pixels)
            pixels, labels, masks = pixels[share], labels[share], masks[share]
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, total, args.warmup_steps, args.lr)
        start = time.perf_counter()
        with autocast:
            if args.task == "simmim":
                loss = train_model(torch.from_numpy(pixels), bool_masked_pos=torch.from_numpy(masks)).loss
            else:
                loss = train_model(torch.from_numpy(pixels), labels=torch.from_numpy(labels)).loss
        loss = loss * weight
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if world > 1:  # the loss of the whole batch, for the log
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= world
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", img_per_s=f"{len(pixels) / (time.perf_counter() - start):.0f}")
        bar.update(1)
        if rank == 0 and (step % args.save_every == 0 or step == stop):
            model.save_pretrained(ckpt_dir)
            torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step},
                       os.path.join(ckpt_dir, "trainer_state.pt"))
        if rank == 0 and step % steps_per_epoch == 0 and args.task == "classify":
            print(f"epoch {step // steps_per_epoch}: eval accuracy {evaluate(model, data, args.batch_size):.3f}",
                  file=sys.stderr)
    bar.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print(json.dumps({"steps": step, "losses": losses,
                      "eval_accuracy": evaluate(model, data, args.batch_size) if args.task == "classify" else None}))


def evaluate(model, data: ImageFolder, batch_size: int) -> float:
    model.eval()
    with torch.inference_mode():
        return accuracy(lambda pixels: model(torch.from_numpy(pixels)).logits, data, batch_size)

if __name__ == "__main__":
    main()
