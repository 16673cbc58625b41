"""Fine-tune TFViTForImageClassification, or pretrain TFViTForMaskedImageModeling with SimMIM, with `model.fit`.

    python examples/train_tf.py --data DATA --out OUT [--task classify|simmim] [--model DIR] [--epochs 3]
        [--batch-size 8] [--lr 1e-3] [--warmup-steps 5] [--save-every 10] [--resume] [--mixed-precision bf16]

Keras runs the loop: the loss comes from the labels (or the masks), a warmup-then-cosine schedule drives
AdamW, a progress bar shows loss and throughput, evaluation accuracy is printed after every epoch. To checkpoint
every N steps and resume exactly, each Keras "epoch" is one step of the real schedule, and the weights and
optimizer state are saved after every N. Data-parallel with `--data-parallel` (tf.distribute.MirroredStrategy over
the GPUs, or over `--cpu-replicas` logical CPU devices when there is no GPU).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from data import (  # noqa: E402
    ImageFolder,
    accuracy,
    parse_and_open,
    pretrained_arguments,
    random_masks,
    small_config,
    training_arguments,
)


def arguments():
    parser = training_arguments(__doc__)
    parser.add_argument("--data-parallel", action="store_true", help="MirroredStrategy over the visible devices")
    parser.add_argument("--cpu-replicas", type=int, default=2, help="with --data-parallel and no GPU: CPU replicas")
    return parser


if __name__ == "__main__":
    # Before TensorFlow's import (about 10 s), so that a wrong command line or data folder fails at once.
    RUN = parse_and_open(arguments())

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vit import TFViTForImageClassification, TFViTForMaskedImageModeling  # noqa: E402


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """The same schedule as the other frameworks' scripts (`data.warmup_cosine`), in TF ops."""

    def __init__(self, peak: float, warmup: int, total: int) -> None:
        self.peak, self.warmup, self.total = peak, warmup, total

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / float(self.warmup)
        progress = tf.minimum(1.0, (step - self.warmup) / float(max(1, self.total - self.warmup)))
        cosine = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


def step_batches(data: ImageFolder, args, num_patches: int, start: int, stop: int) -> tf.data.Dataset:
    """Global steps start..stop-1 of the schedule, in order: the same batches whether or not a run resumed."""
    per_epoch = data.steps_per_epoch(args.batch_size)

    def batches():
        for step in range(start, stop):
            epoch, batch = divmod(step, per_epoch)
            pixels, labels = data.train_batch(epoch, batch, args.batch_size)
            if args.task == "simmim":
                masks = random_masks(np.random.default_rng([args.seed, step, 2]), len(pixels), num_patches)
                yield {"pixel_values": pixels, "bool_masked_pos": masks}
            else:
                yield pixels, labels

    pixels = tf.TensorSpec((None, 3, *args.image_size), tf.float32)
    if args.task == "simmim":
        signature = {"pixel_values": pixels, "bool_masked_pos": tf.TensorSpec((None, num_patches), tf.bool)}
    else:
        signature = (pixels, tf.TensorSpec((None,), tf.int64))
    options = tf.data.Options()
    # One generator feeds every replica; tf.distribute splits each global batch (there are no files to shard).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return tf.data.Dataset.from_generator(batches, output_signature=signature).with_options(options)


class Report(keras.callbacks.Callback):
    """Every Keras "epoch" is one global step (its number): the loss of every step, a checkpoint every
    --save-every steps and at the end, a progress line per checkpoint, and evaluation accuracy after each real
    epoch. Epochs of one step never run out of data, which would change the weights (by about 5e-5 here)."""

    def __init__(self, data: ImageFolder, args, per_epoch: int, stop: int, backup_dir: str, done: int) -> None:
        super().__init__()
        self.data, self.args, self.per_epoch, self.stop, self.backup_dir = data, args, per_epoch, stop, backup_dir
        self.losses, self.started = [], 0.0
        self.bar = tqdm(total=stop, initial=done, unit="step", file=sys.stderr, disable=None)

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["last_loss"]))
        rate = self.args.batch_size / (time.perf_counter() - self.started)
        self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}", img_per_s=f"{rate:.0f}")
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        if step % self.args.save_every == 0 or step == self.stop:
            save_checkpoint(self.model, self.backup_dir, step)
            recent = self.losses[-self.args.save_every:]
            tqdm.write(f"step {step}/{self.stop}: checkpoint saved, mean loss {sum(recent) / len(recent):.3f}",
                       file=sys.stderr)
        if self.args.task == "classify" and step % self.per_epoch == 0:
            tqdm.write(f"epoch {step // self.per_epoch}: eval accuracy "
                       f"{evaluate(self.model, self.data, self.args.batch_size):.3f}", file=sys.stderr)


STEP_RECORD = "steps_done.json"
WEIGHTS = "latest.weights.h5"  # the model's and the optimizer's variables (Keras' weights-only format)


def save_checkpoint(model, folder: str, step: int) -> None:
    """The weights, optimizer state and step count after `step` steps, each file replaced atomically."""
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, "partial." + WEIGHTS)
    model.save_weights(temporary)
    os.replace(temporary, os.path.join(folder, WEIGHTS))
    with open(os.path.join(folder, STEP_RECORD + ".tmp"), "w") as f:
        json.dump({"step": step}, f)
    os.replace(os.path.join(folder, STEP_RECORD + ".tmp"), os.path.join(folder, STEP_RECORD))


def restore_checkpoint(model, folder: str) -> int:
    """Load the checkpoint in `folder` into the (compiled) model; the number of steps it had done."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(folder, WEIGHTS))
    with open(os.path.join(folder, STEP_RECORD)) as f:
        return int(json.load(f)["step"])


def build(args, classes: list[str]):
    cls = TFViTForMaskedImageModeling if args.task == "simmim" else TFViTForImageClassification
    if args.model:
        return cls.from_pretrained(args.model, **pretrained_arguments(args, classes))
    keras.utils.set_random_seed(args.seed)
    return cls(small_config(len(classes), args.image_size, classes))


def main(args, processor, data: ImageFolder) -> None:
    devices = None
    if args.data_parallel and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if args.mixed_precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    per_epoch = data.steps_per_epoch(args.batch_size)
    total = args.epochs * per_epoch
    stop = min(total, args.max_steps or total)
    strategy = tf.distribute.MirroredStrategy(devices) if args.data_parallel else tf.distribute.get_strategy()
    with strategy.scope():
        model = build(args, data.classes)
        model.compile(optimizer=keras.optimizers.AdamW(WarmupCosine(args.lr, args.warmup_steps, total),
                                                       weight_decay=0.05))
    backup_dir = os.path.join(args.out, "checkpoint")
    if not args.resume and os.path.isdir(backup_dir):
        raise SystemExit(f"{backup_dir} exists; pass --resume to continue or choose another --out.")
    done = 0
    if args.resume and os.path.isfile(os.path.join(backup_dir, STEP_RECORD)):
        with strategy.scope():
            done = restore_checkpoint(model, backup_dir)
        print(f"resumed from step {done}", file=sys.stderr)
    report = Report(data, args, per_epoch, stop, backup_dir, done)
    if done < stop:
        model.fit(step_batches(data, args, model.config.num_patches, done, stop), initial_epoch=done, epochs=stop,
                  steps_per_epoch=1, callbacks=[report], verbose=0)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print(json.dumps({"steps": stop, "losses": report.losses, "devices": strategy.num_replicas_in_sync,
                      "eval_accuracy": evaluate(model, data, args.batch_size) if args.task == "classify" else None}))


def evaluate(model, data: ImageFolder, batch_size: int) -> float:
    return accuracy(lambda pixels: model(pixels).logits, data, batch_size)

if __name__ == "__main__":
    main(*RUN)
