"""The training process behind `z1 finetune`: mlx-lm's trainer, reporting JSON lines.

Run as `python -m z1mlx.finetune.worker JOB.json` by `z1 finetune`, never by hand. The
training loop is mlx-lm's own (`mlx_lm.tuner.trainer.train`); this module only gives it
the model, the optimizer and the batches, and uses the batch iterator, which runs between
two steps, for what must happen there: validation, checkpoints and stopping on Ctrl+C.

Protocol: one JSON object per line on the original stdout; anything mlx-lm prints goes
to stderr, which the parent keeps in the run's log. Events: start, step, report,
checkpoint, done, interrupted, error.
"""

import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from mlx_lm.tuner.callbacks import TrainingCallback

from .job import (
    ADAPTER_CONFIG,
    ADAPTERS,
    CHECKPOINTS,
    METRICS,
    OPTIMIZER,
    STATE,
    Job,
    checkpoint_dirs,
)


class Interrupted(Exception):
    """Raised between two steps after SIGINT, to leave mlx-lm's loop with the model intact."""


class Events:
    """JSON lines to the parent; a vanished parent ends the run (BrokenPipeError)."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def emit(self, event: str, **fields) -> None:
        self._file.write(json.dumps({"event": event, **fields}) + "\n")


def schedule(learning_rate: float, warmup: int, iters: int):
    """Linear warmup, then cosine decay to a tenth over the rest: Z1's recipe, scaled."""
    from mlx_lm.tuner.utils import build_schedule

    return build_schedule(
        {
            "name": "cosine_decay",
            "warmup": warmup,
            "warmup_init": learning_rate / 100 if warmup else 0.0,
            "arguments": [learning_rate, max(iters - warmup, 1), learning_rate / 10],
        }
    )


class Run(TrainingCallback):
    """State shared by the callback (after each step) and the batch iterator (before each)."""

    def __init__(self, job: Job, events: Events, model, optimizer, valid, stop: dict):
        self.job, self.events, self.model, self.optimizer, self.valid = job, events, model, optimizer, valid
        self.out = Path(job.out)
        self._stop = stop  # set by the SIGINT handler
        self.done = job.start_iteration
        self.saved = job.start_iteration if job.resume_checkpoint else None
        self.trained_tokens = 0
        self._window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
        self._last: dict = {}
        self._metrics = open(self.out / METRICS, "a", buffering=1, encoding="utf-8")

    # mlx-lm calls this after every step (steps_per_report=1); rows are aggregated here so
    # that they fall on multiples of --report-every, resumed or not.
    def on_train_loss_report(self, info: dict) -> None:
        iteration = self.job.start_iteration + info["iteration"]
        tokens = info["trained_tokens"] - self.trained_tokens
        self.trained_tokens = info["trained_tokens"]
        w = self._window
        w["loss"] += info["train_loss"]
        w["steps"] += 1
        w["tokens"] += tokens
        w["seconds"] += tokens / info["tokens_per_second"] if info["tokens_per_second"] else 0.0
        self._last = {"learning_rate": info["learning_rate"], "peak_memory_gb": info["peak_memory"]}
        self.done = iteration
        self.events.emit("step", iteration=iteration)

    @property
    def pending_steps(self) -> int:
        return int(self._window["steps"])

    def on_val_loss_report(self, info: dict) -> None:
        pass  # validation runs in `between_steps`, at global iterations

    def between_steps(self, done: int) -> None:
        """Steps 1..done are finished and evaluated; step done+1 has not started."""
        if self._stop["requested"]:
            raise Interrupted
        job = self.job
        val_loss = None
        if (done == 0 and job.start_iteration == 0) or (done > job.start_iteration and done % job.eval_every == 0):
            val_loss = self.validate()
        if val_loss is not None or (done > job.start_iteration and done % job.report_every == 0):
            self.write_row(done, val_loss)
        if done > job.start_iteration and done % job.save_every == 0:
            self.checkpoint(done)
        if self._stop["requested"]:
            raise Interrupted

    def validate(self) -> float:
        from mlx_lm.tuner.trainer import evaluate

        loss = evaluate(
            model=self.model,
            dataset=self.valid,
            batch_size=self.job.batch_size,
            num_batches=self.job.val_batches,
            max_seq_length=self.job.max_seq_length,
        )
        self.model.train()
        return loss

    def write_row(self, iteration: int, val_loss: float | None) -> None:
        w = self._window
        row = {
            "iteration": iteration,
            "train_loss": w["loss"] / w["steps"] if w["steps"] else None,
            "val_loss": val_loss,
            "learning_rate": self._last.get("learning_rate"),
            "tokens_per_second": w["tokens"] / w["seconds"] if w["seconds"] else None,
            "peak_memory_gb": self._last.get("peak_memory_gb"),
        }
        self._metrics.write(json.dumps(row) + "\n")
        self.events.emit("report", **row, trained_tokens=self.trained_tokens)
        self._window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}

    def checkpoint(self, iteration: int) -> Path:
        """checkpoints/NNNNNNN/{adapters,optimizer}.safetensors, built aside and renamed in."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        root = self.out / CHECKPOINTS
        final = root / f"{iteration:07d}"
        if self.saved == iteration and final.is_dir():
            return final
        tmp = root / f".partial-{iteration:07d}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        adapters = dict(tree_flatten(self.model.trainable_parameters()))
        mx.save_safetensors(str(tmp / ADAPTERS), adapters)
        mx.save_safetensors(str(tmp / OPTIMIZER), dict(tree_flatten(self.optimizer.state)))
        (tmp / ADAPTER_CONFIG).write_bytes((self.out / ADAPTER_CONFIG).read_bytes())
        (tmp / STATE).write_text(json.dumps({"iteration": iteration, "trained_tokens": self.trained_tokens}))
        if final.exists():
            os.replace(final, tmp.with_name(tmp.name + "-old"))
        os.replace(tmp, final)
        # The top-level adapter is always the newest; optimizer state is kept only for it.
        top = self.out / f".{ADAPTERS}.{os.getpid()}.safetensors"
        mx.save_safetensors(str(top), adapters)
        os.replace(top, self.out / ADAPTERS)
        for older in checkpoint_dirs(self.out)[:-1]:
            (older / OPTIMIZER).unlink(missing_ok=True)
        for stale in root.glob(".partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.saved = iteration
        self.events.emit("checkpoint", iteration=iteration, path=str(final))
        return final


def shuffled_batches(dataset, batch_size: int, max_seq_length: int, seed: int, comm_group=None):
    """One pass over `dataset` in a seeded random order, `batch_size` rows a batch, each batch
    padded and laid out by mlx-lm's own `iterate_batches` (run on that batch's rows alone).

    mlx-lm sorts rows by length before it cuts them into batches, so a batch holds rows of about
    one length: little padding, but where rows of one length share a layout, a model can fit a
    whole batch by position alone. Measured in a small loop (2 layers x 192, batches of 12 at
    5e-4): strings followed by their copy were copied 90.0% right after 1000 steps in mixed
    batches, 26.5% in batches of one length."""
    import numpy as np
    from mlx_lm.tuner.trainer import iterate_batches

    order = np.random.default_rng(seed).permutation(len(dataset))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = [dataset[int(i)] for i in order[start : start + batch_size]]
        yield next(iterate_batches(rows, batch_size, max_seq_length, comm_group=comm_group))


def batches(run: Run):
    """mlx-lm's `iterate_batches` (or `shuffled_batches`), one seeded pass per epoch, resumable
    at any iteration."""
    from mlx_lm.tuner.trainer import iterate_batches

    def epoch_batches(dataset, batch_size, max_seq_length, seed, comm_group):
        if run.job.batching == "shuffled":
            return shuffled_batches(dataset, batch_size, max_seq_length, seed, comm_group=comm_group)
        return iterate_batches(dataset, batch_size, max_seq_length, seed=seed, comm_group=comm_group)

    def iterate(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        if not loop:  # validation
            yield from iterate_batches(dataset, batch_size, max_seq_length, comm_group=comm_group)
            return
        per_epoch = len(dataset) // batch_size
        done = run.job.start_iteration
        epoch, skip = divmod(done, per_epoch)
        while True:
            # The epoch's order depends on the seed and the epoch only: a resumed run sees
            # the batches the uninterrupted run would have seen.
            seed = run.job.seed * 100_003 + epoch
            for index, batch in enumerate(epoch_batches(dataset, batch_size, max_seq_length, seed, comm_group)):
                if index < skip:
                    continue
                run.between_steps(done)
                done += 1
                yield batch
            epoch, skip = epoch + 1, 0

    return iterate


def load_rows(path: Path):
    import numpy as np

    from .data import unpack

    data = np.load(path)
    split = lambda name: unpack(data[f"{name}_ids"], data[f"{name}_lengths"], data[f"{name}_prompt_lens"])
    return split("train"), split("valid")


def build_model(job: Job):
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(job.model))
    mx.random.seed(job.seed)
    model.freeze()
    if job.fine_tune_type == "full" and job.num_layers >= len(model.layers):
        model.unfreeze()  # every layer: the whole model, embeddings and final norm included
    elif job.fine_tune_type == "full":
        for layer in model.layers[-job.num_layers :]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, job.num_layers, job.lora_parameters, use_dora=job.fine_tune_type == "dora")
    return model


def restore(job: Job, model, optimizer) -> None:
    import mlx.core as mx
    from mlx.utils import tree_map_with_path

    assert job.resume_checkpoint is not None
    checkpoint = Path(job.resume_checkpoint)
    model.load_weights(str(checkpoint / ADAPTERS), strict=False)
    saved: dict = mx.load(str(checkpoint / OPTIMIZER))  # type: ignore[assignment]  # a .safetensors file
    optimizer.init(model.trainable_parameters())
    optimizer.state = tree_map_with_path(lambda path, value: saved.get(path, value), optimizer.state)


def train(job: Job, events: Events, stop: dict) -> int:
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.trainer import TrainingArgs
    from mlx_lm.tuner.trainer import train as mlx_train
    from mlx_lm.utils import get_total_parameters

    np.random.seed(job.seed)
    train_set, valid_set = load_rows(Path(job.tokens))
    model = build_model(job)
    optimizer = optim.Adam(learning_rate=schedule(job.learning_rate, job.warmup, job.iters))
    if job.resume_checkpoint:
        restore(job, model, optimizer)
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))  # type: ignore[str-unpack,union-attr]
    run = Run(job, events, model, optimizer, valid_set, stop)
    events.emit(
        "start",
        iteration=job.start_iteration,
        iters=job.iters,
        trainable_parameters=trainable,
        total_parameters=get_total_parameters(model),
        train_rows=len(train_set),
        valid_rows=len(valid_set),
    )
    remaining = job.iters - job.start_iteration
    args = TrainingArgs(
        batch_size=job.batch_size,
        iters=remaining,
        val_batches=job.val_batches,
        steps_per_report=1,
        steps_per_eval=remaining + 1,
        steps_per_save=remaining + 1,  # checkpoints are written by `Run.checkpoint`
        max_seq_length=job.max_seq_length,
        adapter_file=str(Path(job.scratch) / ADAPTERS),
        grad_checkpoint=job.grad_checkpoint,
    )
    started = time.perf_counter()
    try:
        mlx_train(
            model=model,
            optimizer=optimizer,
            train_dataset=train_set,
            val_dataset=None,
            args=args,
            iterate_batches=batches(run),
            training_callback=run,
        )
    except Interrupted:
        if run.pending_steps:
            run.write_row(run.done, None)
        path = run.checkpoint(run.done) if run.done > job.start_iteration else None
        events.emit("interrupted", iteration=run.done, checkpoint=str(path) if path else None)
        return 130
    val_loss = run.validate()
    run.write_row(job.iters, val_loss)
    path = run.checkpoint(job.iters)
    mx.eval(model.parameters())
    events.emit(
        "done",
        iteration=job.iters,
        checkpoint=str(path),
        val_loss=val_loss,
        seconds=time.perf_counter() - started,
        peak_memory_gb=mx.get_peak_memory() / 1e9,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Keep the protocol channel clean: whatever mlx-lm prints goes to stderr.
    events = Events(os.dup(1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stop = {"requested": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    try:
        return train(Job.read(Path(argv[0])), events, stop)
    except BrokenPipeError:
        return 1
    except Exception as err:  # reported to the parent, which shows the cause
        traceback.print_exc()
        events.emit("error", type=type(err).__name__, message=str(err) or type(err).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())
