"""G-effects and WAGLE masks for someone else's Trainer, through public callbacks only.

The trainer below is written here, in open-unlearning's style (locuslab/open-unlearning): a
``transformers.Trainer`` subclass whose ``compute_loss`` reads ``{"forget": ..., "retain": ...}``
batches (gradient ascent, or NPO with a frozen reference, plus a retain NLL). It knows nothing
about this project. An independent hook in its ``training_step`` records the parameters and the
accumulated pre-clip gradient of every optimizer step, and a step pre-hook on the optimizer
records the gradient the optimizer receives; the callbacks' results are checked against those.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from geffect import GEffectTracker, gradient_effect, instance_effect, per_instance_dots
from geffect.losses import token_logprobs
from unlearning.data import DataSource, ForgetRetainCollator, ForgetRetainDataset, QADataset
from geffect.batches import concat_batches
from unlearning.callbacks import GEffectCallback, WeightMaskCallback
from unlearning.data import probe_batches

MAX_GRAD_NORM = 0.02  # far below the gradient norms of the tiny model (~0.1 - 1): clipping is active


# ---------------------------------------------------------------------------- an open-unlearning-style trainer
def _sequence_nll(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return -token_logprobs(logits, batch["labels"]).sum(dim=1)  # (B,) summed answer NLL


def unlearning_loss(model, inputs, method, ref_model=None, beta=0.1, alpha=1.0):
    forget = inputs["forget"]
    if method == "ga":
        out = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"], labels=forget["labels"])
        forget_loss = -out.loss
    else:  # NPO: -(2/beta) mean log sigmoid(-beta (NLL_ref - NLL)), sequence-summed NLL
        with torch.no_grad():
            ref = _sequence_nll(ref_model, forget)
        neg_log_ratio = _sequence_nll(model, forget) - ref
        forget_loss = -F.logsigmoid(beta * neg_log_ratio).mean() * 2 / beta
    retain = inputs["retain"]
    retain_loss = model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"],
                        labels=retain["labels"]).loss
    return forget_loss + alpha * retain_loss


class OpenUnlearningStyleTrainer(Trainer):
    def __init__(self, *args, method="ga", ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method
        self.ref = ref_model
        self.captured: dict[int, dict] = {}  # step -> params, pre-clip grads, micro-batches (independent of the callback)
        self._micro: list = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = unlearning_loss(model, inputs, self.method, self.ref)
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._micro.append(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # the last micro-batch of the optimizer step: .grad is the sum
            self.captured[self.state.global_step + 1] = {
                "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                "micro": self._micro,
            }
            self._micro = []
        return loss


# ---------------------------------------------------------------------------- fixtures
@functools.lru_cache(maxsize=None)
def _loaded(target: str):
    from unlearning.models import load_model_and_tokenizer

    return load_model_and_tokenizer(target, dtype="float32")


def _data(tok):
    from unlearning.models import tiny_source

    source = DataSource(embedded=tiny_source().embedded)
    return source.load_split("forget10"), source.load_split("retain90")


def _train(tmp_path, tiny_prepared, *, method="ga", callbacks=(), optimizer=None, bind=True, steps=3, **kw):
    init, tok = _loaded(str(tiny_prepared.target))
    model = copy.deepcopy(init)
    forget_rows, retain_rows = _data(tok)
    dataset = ForgetRetainDataset(QADataset(forget_rows, tok, max_length=128), QADataset(retain_rows, tok, max_length=128),
                                  seed=0, rank=0)
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                max_steps=steps, learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0,
                max_grad_norm=MAX_GRAD_NORM, weight_decay=0.0, logging_steps=1, save_strategy="no",
                remove_unused_columns=False, report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
    base.update(kw)
    ref = copy.deepcopy(init).eval().requires_grad_(False) if method == "npo" else None
    trainer = OpenUnlearningStyleTrainer(model=model, args=TrainingArguments(**base), train_dataset=dataset,
                                         data_collator=ForgetRetainCollator(tok.pad_token_id), method=method,
                                         ref_model=ref, optimizers=(optimizer(model), None) if optimizer else (None, None))
    for cb in callbacks:
        if bind and hasattr(cb, "bind"):
            cb.bind(trainer)
        trainer.add_callback(cb)
    trainer.train()
    return trainer


def _probes(tiny_prepared, size=6):
    _, tok = _loaded(str(tiny_prepared.target))
    forget_rows, retain_rows = _data(tok)
    return probe_batches({"forget": forget_rows, "retain": retain_rows}, tok, size=size, max_length=128)


def _matrix(table, step, probe, groups):
    rows = table[(table["step"] == step) & (table["probe"] == probe)]
    wide = rows.pivot(index="instance", columns="group", values="value").loc[:, list(groups)]
    return torch.tensor(wide.to_numpy(), dtype=torch.float64)


def _at(model, params):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(params[n])
    return m.eval()


def _linear(direction):
    """An objective whose gradient is ``direction``: <direction, θ> (so gradient_effect uses exactly it)."""

    def objective(model, inputs=None, ref_model=None):
        return sum((direction[n] * p).sum() for n, p in model.named_parameters() if n in direction)

    return objective


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------- G-effects
@pytest.mark.parametrize("method", ["ga", "npo"])
def test_any_trainer_tracks_preclip_geffects(method, tmp_path, tiny_prepared):
    """Tracked G-effects (and batch PG-effects) equal geffect's own functions on the recorded
    parameters and pre-clip gradient; clipping was active; the update is bit-identical to training
    without the callback; the logged grad_norm is the pre-clip norm."""
    probes = _probes(tiny_prepared)
    cb = GEffectCallback(probes, every=1, output_dir=tmp_path / "run", pg_effect="batch")
    trainer = _train(tmp_path / "run", tiny_prepared, method=method, callbacks=[cb])
    plain = _train(tmp_path / "plain", tiny_prepared, method=method)
    for (n, p), (_, q) in zip(trainer.model.named_parameters(), plain.model.named_parameters()):
        assert torch.equal(p, q), f"{n}: the callback changed the update"

    record = GEffectTracker.load(tmp_path / "run" / "analysis")
    assert record.steps == [1, 2, 3] and record.pg_steps == [1, 2, 3]
    table, pg = record.table(), record.pg_table()
    init, _ = _loaded(str(tiny_prepared.target))
    logs = {r["step"]: r for r in trainer.state.log_history if "loss" in r}
    for step in (1, 2, 3):
        cap = trainer.captured[step]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in cap["grads"].values()))
        assert norm > 3 * MAX_GRAD_NORM, "clipping must be active for this test to mean anything"
        assert logs[step]["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
        assert record.manifest["step_info"][str(step)]["pre_clip_norm"] == pytest.approx(float(norm), rel=1e-5)
        model = _at(init, cap["params"])
        for probe, batch in probes.items():
            want = gradient_effect(model, _linear(cap["grads"]), None, batch, engine="loop")
            got = _matrix(table, step, probe, want.groups)
            assert _rel(got, want.matrix.double()) < 1e-5, (method, step, probe)
            assert logs[step][f"geffect/{probe}"] == pytest.approx(float(want.total), rel=1e-5)
        # PG-effects of the step's forget instances (both micro-batches)
        forget = concat_batches([mb["forget"] for mb in cap["micro"]])
        for probe, batch in probes.items():
            want = instance_effect(model, forget, batch, engine="loop")
            rows = pg[(pg["step"] == step) & (pg["probe"] == probe)]
            got = rows.pivot(index="instance", columns="group", values="value")
            got = torch.tensor(got.loc[forget["index"].tolist(), list(want.groups)].to_numpy())
            assert _rel(got, want.matrix.double()) < 1e-5, (method, step, probe, "pg")

    # the gradient is the objective's: at step 1 (initial weights) it is the mean over the micro-batches
    cap = trainer.captured[1]
    ref = copy.deepcopy(init).eval() if method == "npo" else None

    def objective(m, inputs, ref_model=None):
        return sum(unlearning_loss(m, mb, method, ref_model) for mb in inputs) / len(inputs)

    want = gradient_effect(copy.deepcopy(init).eval(), objective, cap["micro"], probes["forget"], ref_model=ref)
    assert _rel(_matrix(table, 1, "forget", want.groups), want.matrix.double()) < 1e-5


def test_any_trainer_every_k_and_no_trainer_needed(tmp_path, tiny_prepared):
    """every=2 tracks steps 1 and 3 and leaves step 2 to the Trainer; an unbound callback works
    for G-effects and refuses what needs the trainer with a clear error."""
    probes = _probes(tiny_prepared, size=3)
    cb = GEffectCallback(probes, every=2)
    trainer = _train(tmp_path / "k", tiny_prepared, callbacks=[cb], bind=False)
    assert GEffectTracker.load(tmp_path / "k" / "analysis").steps == [1, 3]
    assert trainer.args.max_grad_norm == MAX_GRAD_NORM  # handed back
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert ["geffect/forget" in r for r in logs] == [True, False, True]  # joined the training log rows
    with pytest.raises(ValueError, match="trainer=trainer"):
        _train(tmp_path / "pg", tiny_prepared, callbacks=[GEffectCallback(probes, pg_effect="batch")], bind=False)
    with pytest.raises(TypeError, match="trainer as a keyword"):
        GEffectCallback(trainer, probes)


def test_probe_batches_from_rows_and_tokenised(tiny_prepared):
    import datasets

    _, tok = _loaded(str(tiny_prepared.target))
    forget_rows, _ = _data(tok)
    qa = probe_batches({"forget": forget_rows}, tok, size=3, max_length=128)["forget"]
    ds = QADataset(forget_rows, tok, max_length=128)
    expect = [ds[i] for i in range(3)]
    for i, item in enumerate(expect):
        T = item["input_ids"].numel()
        assert torch.equal(qa["input_ids"][i, :T], item["input_ids"]) and torch.equal(qa["labels"][i, :T], item["labels"])
        assert (qa["labels"][i, T:] == -100).all() and (qa["attention_mask"][i, T:] == 0).all()
    assert qa["index"].tolist() == [0, 1, 2]
    tokenised = datasets.Dataset.from_list([{"input_ids": e["input_ids"].tolist(), "labels": e["labels"].tolist(),
                                             "index": 10 + i} for i, e in enumerate(expect)])
    tb = probe_batches({"forget": tokenised}, pad_token_id=tok.pad_token_id)["forget"]
    for k in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(tb[k], qa[k]), k
    assert tb["index"].tolist() == [10, 11, 12]
    with pytest.raises(Exception, match="labels"):
        probe_batches({"x": datasets.Dataset.from_list([{"input_ids": [1, 2]}])})
    with pytest.raises(ValueError, match="tokenizer"):
        probe_batches({"x": forget_rows})


# ---------------------------------------------------------------------------- weight masks
def _mask(model, seed=0, density=0.5):
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters()}


class _Seen:
    """SGD with a step pre-hook recording the gradient the optimizer receives."""

    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def __call__(self, model):
        names = {id(p): n for n, p in model.named_parameters()}
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)

        def hook(optimizer, args, kwargs):
            self.grads.append({names[id(p)]: p.grad.detach().clone() for g in optimizer.param_groups
                               for p in g["params"] if p.grad is not None})

        opt.register_step_pre_hook(hook)
        return opt


def _clip_then_mask(g, mask):
    norm = torch.sqrt(sum((v.double() ** 2).sum() for v in g.values())).float()  # unmasked norm
    c = min(1.0, MAX_GRAD_NORM / (float(norm) + 1e-6))
    return {n: v * c * mask[n] for n, v in g.items()}, float(norm)


@pytest.mark.parametrize("with_geffect", [None, "before", "after"])
def test_mask_callback_clips_then_masks(with_geffect, tmp_path, tiny_prepared):
    """WAGLE's order for any Trainer: the optimizer receives mask ⊙ clip(g) with the clip norm of
    the unmasked gradient — alone, and with the G-effect callback added before or after it (which
    then reads mask ⊙ pre-clip g)."""
    init, _ = _loaded(str(tiny_prepared.target))
    mask = _mask(init)
    seen = _Seen()
    callbacks = [WeightMaskCallback(mask)]
    probes = _probes(tiny_prepared, size=3)
    if with_geffect:
        cb = GEffectCallback(probes, every=1, output_dir=tmp_path)
        callbacks = [cb, *callbacks] if with_geffect == "before" else [*callbacks, cb]
    trainer = _train(tmp_path, tiny_prepared, callbacks=callbacks, optimizer=seen, steps=2)
    logs = {r["step"]: r for r in trainer.state.log_history if "loss" in r}
    for step, received in zip((1, 2), seen.grads):
        g = trainer.captured[step]["grads"]
        want, norm = _clip_then_mask(g, mask)
        assert logs[step]["grad_norm"] == pytest.approx(norm, rel=1e-5)  # measured before masking
        assert max(_rel(received[n], want[n]) for n in want if want[n].norm() > 0) < 1e-5
        assert all(torch.equal(received[n][~mask[n]], torch.zeros_like(received[n][~mask[n]])) for n in mask)
        wrong, _ = _clip_then_mask({n: v * mask[n] for n, v in g.items()}, mask)  # mask first, then clip
        assert _rel(torch.cat([v.flatten() for v in wrong.values()]),
                    torch.cat([v.flatten() for v in want.values()])) > 0.2
        if with_geffect:
            table = GEffectTracker.load(tmp_path / "analysis").table()
            model = _at(init, trainer.captured[step]["params"])
            for probe, batch in probes.items():
                ref = per_instance_dots(model, batch, {n: v * mask[n] for n, v in g.items()}, engine="loop")
                groups = list(GEffectTracker.load(tmp_path / "analysis").manifest["groups"])
                assert _rel(_matrix(table, step, probe, groups), ref.double()) < 1e-5


def test_masked_weights_bit_identical_with_adamw(tmp_path, tiny_prepared):
    init, _ = _loaded(str(tiny_prepared.target))
    mask = _mask(init, seed=1)
    from geffect.masking import save_mask

    path = save_mask(mask, tmp_path / "mask.safetensors")
    trainer = _train(tmp_path / "run", tiny_prepared, method="npo", callbacks=[WeightMaskCallback(path)], steps=2,
                     optim="adamw_torch", max_grad_norm=1.0)
    for n, p in trainer.model.named_parameters():
        q = dict(init.named_parameters())[n]
        assert torch.equal(p.detach()[~mask[n]], q[~mask[n]]), f"{n}: masked weights moved"
        assert not torch.equal(p.detach()[mask[n]], q[mask[n]]), f"{n}: kept weights did not move"


def test_mask_callback_warns_on_weight_decay(tmp_path, tiny_prepared, caplog):
    init, _ = _loaded(str(tiny_prepared.target))
    with caplog.at_level("WARNING"):
        _train(tmp_path, tiny_prepared, callbacks=[WeightMaskCallback(_mask(init))], steps=1, weight_decay=0.1)
    assert "weight_decay=0.1 with a weight mask" in caplog.text


def test_replay_of_any_trainer_checkpoints(tmp_path, tiny_prepared):
    """The recorded micro-batches + the Trainer's own checkpoints: geffect.replay with a loss callable
    reproduces the live values (checkpoint-S -> step S + 1, the initial model -> step 1)."""
    from geffect.replay import replay

    probes = _probes(tiny_prepared, size=4)
    cb = GEffectCallback(probes, output_dir=tmp_path, record_batches=True, pg_effect="batch")
    _train(tmp_path, tiny_prepared, callbacks=[cb], save_strategy="steps", save_steps=1)
    init, _ = _loaded(str(tiny_prepared.target))
    record = replay(tmp_path, lambda model, inputs: unlearning_loss(model, inputs, "ga"), initial_model=copy.deepcopy(init),
                    pg_effect="batch")
    live = GEffectTracker.load(tmp_path / "analysis")
    assert record.steps == [1, 2, 3] and live.steps == [1, 2, 3]  # checkpoint-3 has no step-4 batch: skipped
    for pg in (False, True):
        a = (live.pg_table if pg else live.table)(view=None).set_index(["step", "probe", "instance", "view", "group"])
        b = (record.pg_table if pg else record.table)(view=None).set_index(["step", "probe", "instance", "view", "group"])
        a, b = a["value"].sort_index(), b["value"].sort_index()
        assert list(a.index) == list(b.index)
        for step in (1, 2, 3):
            ta, tb = torch.tensor(a.loc[step].to_numpy()), torch.tensor(b.loc[step].to_numpy())
            assert _rel(tb, ta) < 1e-5, (step, pg)
