"""The training loop shared by the default models and ``python -m unlearning.finetune``.

A plain AdamW loop (linear warmup, cosine decay, gradient clipping, length-grouped batches,
tqdm progress) rather than ``transformers.Trainer``: for the tiny from-scratch models used
offline it is faster on CPU (no per-step callback / logging machinery) and has no hidden
state. The loss is the usual token-mean NLL over answer tokens (prompt labels are
``IGNORE_INDEX``), i.e. the empirical risk R(D) of the training rows.

**Training until memorised.** ``fine_tune(..., stop=MemorisationStop(...))`` treats ``epochs``
as a cap: after every ``check_every``-th epoch (from ``min_epochs`` on) it measures the
teacher-forced answer-token accuracy (:func:`unlearning.models.answer_token_accuracy`) of
each monitored dataset and stops as soon as every one is ``>= threshold``. The learning-rate
schedule is laid out over the cap, so stopping early simply ends training part-way down the
cosine.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from unlearning.models.accuracy import answer_token_accuracy

logger = logging.getLogger(__name__)

__all__ = ["FineTuneConfig", "MemorisationStop", "fine_tune", "lr_factor", "length_grouped_order", "make_dataset"]


@dataclass
class MemorisationStop:
    """Stop training once the model has memorised its monitored sets.

    After epoch e (1-based) with ``e >= min_epochs`` and ``e % check_every == 0`` the
    teacher-forced answer-token accuracy of every dataset in ``monitor`` is measured; training
    stops when all are ``>= threshold``. ``fine_tune``'s ``epochs`` is the cap.

    Args:
        monitor: name -> tokenised map-style dataset (e.g. ``QADataset`` of training rows).
        threshold: accuracy every monitored set must reach, in (0, 1].
        min_epochs: never stop before this many epochs.
        check_every: measure every this many epochs.
        batch_size: batch size of the accuracy passes.
    """

    monitor: Mapping[str, Any]
    threshold: float = 0.99
    min_epochs: int = 1
    check_every: int = 1
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.monitor:
            raise ValueError("MemorisationStop needs at least one dataset to monitor, e.g. {'forget': QADataset(...)}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.min_epochs < 1 or self.check_every < 1:
            raise ValueError("min_epochs and check_every must be >= 1")

    def due(self, epoch: int) -> bool:
        """Whether to measure after ``epoch`` (1-based)."""
        return epoch >= self.min_epochs and epoch % self.check_every == 0

    def measure(self, model: Any, pad_token_id: int | None) -> dict[str, float]:
        return {
            name: answer_token_accuracy(model, ds, batch_size=self.batch_size, pad_token_id=pad_token_id)
            for name, ds in self.monitor.items()
        }

    def reached(self, accuracies: Mapping[str, float]) -> bool:
        return all(acc >= self.threshold for acc in accuracies.values())


def length_grouped_order(lengths: Sequence[int], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (less padding, same randomness per seed).

    Indices are shuffled, cut into chunks of 16 batches, sorted by length inside each chunk and
    split into batches; the batch order is then shuffled.
    """
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = batch_size * 16
    batches: list[list[int]] = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_dataset(rows: Any, tokenizer: Any, *, max_length: int = 256) -> Any:
    """``QADataset`` over question/answer ``rows`` with the tokenizer's prompt template."""
    from unlearning.data import QADataset, get_template

    return QADataset(rows, tokenizer, template=get_template(tokenizer), max_length=max_length)


@dataclass(frozen=True)
class FineTuneConfig:
    """The optimisation of one :func:`fine_tune` run (validated once, here).

    AdamW (betas 0.9 / 0.98, no weight decay on 1-D parameters), linear warmup over
    ``warmup_ratio`` of all steps, cosine decay to ``min_lr_ratio`` x ``lr`` at the last step of
    ``epochs`` (the cap when training stops once memorised), gradient clipping at ``grad_clip``
    (None or 0: off), length-grouped batches of ``batch_size`` drawn with ``seed``; question/answer
    rows are tokenised to at most ``max_length`` tokens.
    """

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {self.epochs}, {self.batch_size}, "
                             f"{self.lr}")

    @classmethod
    def resolve(cls, config: FineTuneConfig | None = None, **settings: Any) -> FineTuneConfig:
        """``config`` with keyword ``settings`` (fields of this class) applied, or a new one from them."""
        if config is None:
            return cls(**settings)
        return dataclasses.replace(config, **settings) if settings else config


def fine_tune(
    model: Any,
    tokenizer: Any,
    data: Any,
    config: FineTuneConfig | None = None,
    *,
    stop: MemorisationStop | None = None,
    collate_fn: Callable[[list[dict]], dict[str, torch.Tensor]] | None = None,
    progress: bool = True,
    desc: str = "finetune",
    **settings: Any,
) -> dict[str, Any]:
    """Train ``model`` in place on ``data``.

    Args:
        model: a causal LM (any ``PreTrainedModel``); trained in its current dtype and device.
        tokenizer: its tokenizer (pad token set); used to tokenise ``data`` given as rows.
        data: a list / ``datasets.Dataset`` of ``{"question", "answer"}`` rows (tokenised with
            :func:`make_dataset`), or an already tokenised map-style dataset whose items hold
            1-D ``input_ids`` / ``attention_mask`` / ``labels``.
        config: the optimisation (:class:`FineTuneConfig`); its fields may instead be given as
            keywords (``epochs=``, ``lr=``, ``batch_size=``, ...), applied on top.
        stop: a :class:`MemorisationStop`; ``None`` trains exactly ``epochs`` epochs.
        collate_fn: batches items (default ``QACollator(tokenizer.pad_token_id)``).
        progress: show a tqdm bar over optimisation steps.

    Returns:
        ``{"epoch_losses", "final_loss", "seconds", "steps", "epochs", "reached", "history"}``:
        ``epochs`` run, ``reached`` whether ``stop``'s threshold was met (``None`` without a
        stopping rule), ``history`` the accuracies measured (``[{"epoch": e, name: acc, ...}]``).
    """
    from tqdm.auto import tqdm

    config = FineTuneConfig.resolve(config, **settings)
    items = _training_items(data, tokenizer, config.max_length)
    if collate_fn is None:
        from unlearning.data import QACollator

        collate_fn = QACollator(tokenizer.pad_token_id)
    lengths = [len(items[i]["input_ids"]) for i in range(len(items))]
    gen = torch.Generator().manual_seed(config.seed)
    total = math.ceil(len(items) / config.batch_size) * config.epochs
    opt, sched = _optimizer(model, config, total)
    epoch_losses: list[float] = []
    history: list[dict[str, float]] = []
    reached: bool | None = None if stop is None else False
    steps = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(1, config.epochs + 1):
            batches = (collate_fn([items[i] for i in idx]) for idx in length_grouped_order(lengths, config.batch_size, gen))
            loss, n = _train_epoch(model, batches, opt, sched, config.grad_clip, bar, epoch)
            epoch_losses.append(loss)
            steps += n
            logger.debug("%s epoch %d loss %.4f", desc, epoch, epoch_losses[-1])
            if stop is not None and stop.due(epoch):
                accs = stop.measure(model, tokenizer.pad_token_id)
                history.append({"epoch": epoch, **accs})
                logger.debug("%s epoch %d accuracy %s", desc, epoch, {k: round(v, 4) for k, v in accs.items()})
                if stop.reached(accs):
                    reached = True
                    break
    finally:
        bar.close()
        model.eval()
    seconds = time.perf_counter() - t0
    if reached is False:
        logger.warning(
            "%s: accuracy threshold %.3f not reached within the cap of %d epochs (last: %s); "
            "raise the epoch cap or the learning rate", desc, stop.threshold, config.epochs,
            history[-1] if history else "none",
        )
    logger.info("%s: %d epochs, %d steps in %.1fs, final epoch loss %.4f", desc, len(epoch_losses), steps, seconds,
                epoch_losses[-1])
    return {"epoch_losses": epoch_losses, "final_loss": epoch_losses[-1], "seconds": seconds, "steps": steps,
            "epochs": len(epoch_losses), "reached": reached, "history": history}


def _training_items(data: Any, tokenizer: Any, max_length: int) -> Any:
    """``data`` as a tokenised map-style dataset (question/answer rows go through :func:`make_dataset`)."""
    items = data
    first = data[0] if len(data) else None
    if isinstance(first, dict) and "question" in first and "input_ids" not in first:
        items = make_dataset(data, tokenizer, max_length=max_length)
    if len(items) == 0:
        raise ValueError("fine_tune got an empty dataset; check the split name and the data source")
    return items


def _optimizer(model: Any, config: FineTuneConfig, total: int):
    """AdamW (no decay on 1-D parameters) and its warmup + cosine schedule over ``total`` steps."""
    warmup = max(1, int(config.warmup_ratio * total))
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, config.min_lr_ratio))
    return opt, sched


def _train_epoch(model: Any, batches, opt, sched, grad_clip: float | None, bar, epoch: int) -> tuple[float, int]:
    """One pass over ``batches`` (an optimizer step each); returns the mean loss and the number of steps."""
    model.train()
    device = next(model.parameters()).device
    running, count = 0.0, 0
    for batch in batches:
        out = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            labels=batch["labels"].to(device),
        )
        out.loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += float(out.loss.detach())
        count += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{running / count:.3f}", refresh=False)
    return running / max(1, count), count
