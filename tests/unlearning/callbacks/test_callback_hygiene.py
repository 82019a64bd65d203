"""The callbacks leave nothing behind (Captum's hook hygiene): not after a run, not after a run that raises.

What a G-effect callback changes on the Trainer around a tracked step (``args.max_grad_norm``
while the clipping is held, an instance attribute ``training_step`` while the step's
micro-batches are recorded) must be given back at the end of the step, at the end of training,
and when training raises: in the objective's training step, or in the tracking itself. No
module hook of the G-effect engine may stay on the model either.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from unlearning import objectives
from unlearning.callbacks import GEffectCallback, TokenWeightCallback
from unlearning.data import DataSource, ForgetRetainCollator, ForgetRetainDataset, QADataset, probe_batches
from unlearning.training import UnlearningArguments, UnlearningTrainer

MAX_GRAD_NORM = 0.05


@functools.lru_cache(maxsize=None)
def _loaded(target: str):
    from unlearning.models import load_model_and_tokenizer

    return load_model_and_tokenizer(target, dtype="float32")


class Failing:
    """An objective (NPO, which has a reference model and instance weights) that raises a chosen error
    in the training forward of optimizer step ``step`` or, with ``in_probe``, when the G-effect
    callback evaluates it on the probes at that step."""

    def __init__(self, step: int, error: type[BaseException], *, in_probe: bool = False):
        self.inner = objectives.get("npo", retain_loss="nll")
        self.name, self.needs_reference, self.hparams = "npo", True, self.inner.hparams
        self.step, self.error, self.in_probe = step, error, in_probe
        self.trainer = None

    def __call__(self, model, inputs, ref_model=None):
        step = self.trainer.state.global_step + 1
        probe_call = not torch.is_grad_enabled()
        if step == self.step and probe_call == self.in_probe:
            raise self.error(f"failing on purpose at step {step}")
        return self.inner(model, inputs, ref_model=ref_model)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def _trainer(tmp_path, tiny_prepared, objective, **kw):
    init, tok = _loaded(str(tiny_prepared.target))
    model = copy.deepcopy(init)
    from unlearning.models import tiny_source

    source = DataSource(embedded=tiny_source().embedded)
    forget = QADataset(source.load_split("forget10"), tok, max_length=128)
    retain = QADataset(source.load_split("retain90"), tok, max_length=128)
    args = UnlearningArguments(output_dir=str(tmp_path), method="npo", per_device_train_batch_size=2,
                               gradient_accumulation_steps=2, max_steps=3, learning_rate=1e-3, warmup_steps=0,
                               max_grad_norm=MAX_GRAD_NORM, save_strategy="no", shuffle=False, max_length=128,
                               use_cpu=True, disable_tqdm=True, seed=0, **kw)
    gen = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in model.named_parameters()}
    trainer = UnlearningTrainer(model=model, args=args, objective=objective, weight_mask=mask,
                                train_dataset=ForgetRetainDataset(forget, retain, seed=0, rank=0),
                                data_collator=ForgetRetainCollator(tok.pad_token_id), processing_class=tok)
    if isinstance(objective, Failing):
        objective.trainer = trainer
    probes = probe_batches({"forget": forget, "retain": retain}, size=4, pad_token_id=tok.pad_token_id)
    cb = GEffectCallback(probes, every=1, pg_effect="batch", probe_weights=True, record_batches=True)
    trainer.add_callback(cb)
    trainer.add_callback(TokenWeightCallback(trainer))
    return trainer, cb


def _assert_nothing_left(trainer, cb):
    assert "training_step" not in vars(trainer), "the training_step wrapper was not removed"
    assert trainer.args.max_grad_norm == MAX_GRAD_NORM, "max_grad_norm was not given back"
    assert not cb.clipping.held and cb._wrapper is None and cb._micro == [] and not cb._recording
    assert _hooks(trainer.model) == 0 and _hooks(trainer.ref_model) == 0, "module hooks left on a model"


def test_nothing_left_after_a_run(tmp_path, tiny_prepared):
    trainer, cb = _trainer(tmp_path, tiny_prepared, objectives.get("npo", retain_loss="nll"))
    trainer.train()
    assert cb.tracker.steps == [1, 2, 3] and cb.tracker.pg_steps == [1, 2, 3]
    _assert_nothing_left(trainer, cb)


@pytest.mark.parametrize("error, in_probe", [(RuntimeError, False), (KeyboardInterrupt, False), (RuntimeError, True)])
def test_nothing_left_after_a_run_that_raises(tmp_path, tiny_prepared, error, in_probe):
    """The objective raises at step 2 (a tracked step, with clipping held and batches recorded):
    in its training forward, or when the callback evaluates it on the probes (inside the tracking)."""
    objective = Failing(step=2, error=error, in_probe=in_probe)
    trainer, cb = _trainer(tmp_path, tiny_prepared, objective)
    with pytest.raises(error, match="failing on purpose at step 2"):
        trainer.train()
    assert trainer.state.global_step == 1
    _assert_nothing_left(trainer, cb)
    objective.step = None  # the same trainer trains again, normally
    trainer.train()
    _assert_nothing_left(trainer, cb)
