"""UnlearningTrainer / run_unlearning on the tiny prepared model (fast, CPU, float32)."""
from __future__ import annotations

import copy
import functools
import json

import pytest
import torch

from geffect.losses import answer_nll
from unlearning.data import DataSource

PROBE_ROWS = 8


def _tiny_data_config():
    from unlearning.models import tiny_source

    return tiny_source().embedded  # the 3-author data the tiny target was trained on


@functools.lru_cache(maxsize=None)
def _loaded(target: str):
    from unlearning.models import load_model_and_tokenizer

    return load_model_and_tokenizer(target, dtype="float32")


def _fresh(tiny_prepared):
    model, tok = _loaded(str(tiny_prepared.target))
    return copy.deepcopy(model), tok


def _args(tmp_path, **kw):
    from unlearning.training import UnlearningArguments

    base = dict(
        output_dir=str(tmp_path),
        method="ga",
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=5e-4,
        warmup_steps=0,
        save_strategy="no",
        shuffle=False,
        max_length=128,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return UnlearningArguments(**base)


def _probe_batch(tokenizer, split: str):
    from unlearning.data import QACollator, QADataset, load_split

    ds = QADataset(load_split("embedded", split, config=_tiny_data_config()), tokenizer, max_length=128)
    batch = QACollator(tokenizer.pad_token_id)([ds[i] for i in range(min(PROBE_ROWS, len(ds)))])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


@torch.no_grad()
def _risk(model, batch) -> float:
    """Mean answer NLL R(D) of a probe batch."""
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(answer_nll(logits, batch["labels"]).mean())


def _run(tmp_path, tiny_prepared, **kw):
    from unlearning.training import run_unlearning

    model, tok = _fresh(tiny_prepared)
    return run_unlearning(_args(tmp_path, **kw), model=model, tokenizer=tok, data=DataSource(embedded=_tiny_data_config()))


# ---------------------------------------------------------------------------- every method forgets
def _methods():
    from unlearning import objectives

    return objectives.available()


_RISKS: dict[str, tuple[float, float]] = {}
#: method-specific arguments for the 2-layer tiny model (RMU's default layer 7 does not exist)
METHOD_ARGS = {"rmu": {"objective_kwargs": json.dumps({"layer": 1})}}


def _method_risks(method, tmp_path_factory, tiny_prepared):
    if method not in _RISKS:
        res = _run(tmp_path_factory.mktemp(method), tiny_prepared, method=method, log_token_weights=False,
                   **METHOD_ARGS.get(method, {}))
        _, tok = _loaded(str(tiny_prepared.target))
        _RISKS[method] = (_risk(res.model, _probe_batch(tok, "forget10")), _risk(res.model, _probe_batch(tok, "retain90")))
    return _RISKS[method]


@pytest.mark.parametrize("method", _methods())
def test_every_method_raises_forget_risk(method, tmp_path_factory, tiny_prepared):
    model, tok = _loaded(str(tiny_prepared.target))
    before = _risk(model, _probe_batch(tok, "forget10"))
    after, _ = _method_risks(method, tmp_path_factory, tiny_prepared)
    assert after > before, f"{method}: forget risk {before:.4f} -> {after:.4f} did not rise"


def test_retain_terms_protect_retain_data_better_than_ga(tmp_path_factory, tiny_prepared):
    _, retain_ga = _method_risks("ga", tmp_path_factory, tiny_prepared)
    for method in ("gd", "satimp"):
        _, retain = _method_risks(method, tmp_path_factory, tiny_prepared)
        assert retain < retain_ga, f"{method} retain risk {retain:.4f} not below GA's {retain_ga:.4f}"


# ---------------------------------------------------------------------------- trainer pieces
def test_reference_model_only_when_needed(tmp_path, tiny_prepared):
    res = _run(tmp_path / "ga", tiny_prepared, method="ga", max_steps=1)
    assert res.trainer.ref_model is None
    res = _run(tmp_path / "npo", tiny_prepared, method="npo", max_steps=1)
    ref = res.trainer.ref_model
    assert ref is not None and not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    # the reference is the initial model: it did not move with the trained one
    init, _ = _loaded(str(tiny_prepared.target))
    for (n, p), (_, q) in zip(ref.named_parameters(), init.named_parameters()):
        assert torch.equal(p, q), n


def test_metrics_logged_with_slash_keys(tmp_path, tiny_prepared):
    from unlearning.runs import read_jsonl

    res = _run(tmp_path, tiny_prepared, method="satimp", retain_loss="nll", retain_weight=0.1, max_steps=2)
    rows = [r for r in read_jsonl(tmp_path / "logs.jsonl", dedupe=("step", "kind")) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "loss/forget", "loss/retain", "weights/mean", "grad_norm"):
        assert all(key in r for r in rows), key
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss/forget"] + 0.1 * rows[0]["loss/retain"], rel=1e-4)
    assert res.trainer.last_output is not None


def test_mask_freezes_masked_weights(tmp_path, tiny_prepared):
    from geffect.masking import save_mask

    init, _ = _loaded(str(tiny_prepared.target))
    gen = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in init.named_parameters()}
    path = save_mask(mask, tmp_path / "mask.safetensors")
    res = _run(tmp_path / "run", tiny_prepared, method="ga", max_steps=2, mask=str(path), weight_decay=0.0)
    trained = dict(res.model.named_parameters())
    for n, p in init.named_parameters():
        q = trained[n].detach()
        assert torch.equal(q[~mask[n]], p[~mask[n]]), f"{n}: masked weights moved"
        assert not torch.equal(q[mask[n]], p[mask[n]]), f"{n}: unmasked weights did not move"


def test_mask_with_accumulation(tmp_path, tiny_prepared):
    """The mask is applied once per optimizer step, after the last accumulated micro-batch."""
    from geffect.masking import save_mask

    init, _ = _loaded(str(tiny_prepared.target))
    mask = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in init.named_parameters()}
    name = "model.norm.weight" if "model.norm.weight" in mask else next(iter(mask))
    mask[name][:] = True  # only one tensor may change
    path = save_mask(mask, tmp_path / "mask.safetensors")
    res = _run(tmp_path / "run", tiny_prepared, method="ga", max_steps=2, per_device_train_batch_size=2,
               gradient_accumulation_steps=2, mask=str(path))
    trained = dict(res.model.named_parameters())
    for n, p in init.named_parameters():
        assert torch.equal(trained[n].detach(), p) == (n != name), n


def test_nonfinite_loss_raises_with_method_and_step(tmp_path, tiny_prepared):
    from unlearning.objectives import ObjectiveOutput
    from unlearning.training import UnlearningTrainer
    from unlearning.training import build_datasets
    from unlearning.data import ForgetRetainCollator

    class Exploding:
        name = "exploding"
        needs_reference = False

        def __call__(self, model, inputs, ref_model=None):
            b = inputs["forget"]
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            return ObjectiveOutput(loss=logits.sum() * float("nan"))

    model, tok = _fresh(tiny_prepared)
    args = _args(tmp_path, max_steps=1)
    ds, _, _ = build_datasets(args, tok, model, data=DataSource(embedded=_tiny_data_config()))
    trainer = UnlearningTrainer(model=model, args=args, objective=Exploding(), train_dataset=ds,
                                data_collator=ForgetRetainCollator(tok.pad_token_id))
    with pytest.raises(FloatingPointError, match=r"exploding.*step 1"):
        trainer.train()


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid methods: .*satimp"):
        _args(tmp_path, method="nope")


def test_learning_rate_default_depends_on_model(tmp_path):
    from unlearning.training import DEFAULT_LR_PRETRAINED, DEFAULT_LR_TINY

    assert _args(tmp_path, learning_rate=None).learning_rate == DEFAULT_LR_TINY
    assert _args(tmp_path, learning_rate=None, model="some/model").learning_rate == DEFAULT_LR_PRETRAINED


# ---------------------------------------------------------------------------- token weights
def test_token_weight_tables_written(tmp_path, tiny_prepared):
    from unlearning.runs import read_jsonl

    _run(tmp_path, tiny_prepared, method="satimp", max_steps=2)
    rows = read_jsonl(tmp_path / "analysis" / "token_weights.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("q0", "q10", "q25", "q50", "q75", "q90", "q100", "mean", "std", "entropy", "frac_small"):
        assert key in rows[0]
    assert rows[0]["q0"] <= rows[0]["q50"] <= rows[0]["q100"]
    logs = {r["step"]: r for r in read_jsonl(tmp_path / "logs.jsonl", dedupe=("step", "kind")) if r["kind"] == "train"}
    assert rows[0]["mean"] == pytest.approx(logs[1]["weights/mean"], rel=1e-5)
    bins = read_jsonl(tmp_path / "analysis" / "weight_vs_likelihood.jsonl", dedupe=("step", "bin"))
    assert len(bins) == 20 and sum(b["count"] for b in bins if b["step"] == 1) == rows[0]["n"]


# ---------------------------------------------------------------------------- G-effect tracking
def test_tracked_geffect_equals_direct_gradient_effect(tmp_path, tiny_prepared):
    """max_steps=1: the tracked matrix is gradient_effect of the objective at the initial weights."""
    from geffect import GEffectTracker, gradient_effect
    from unlearning import objectives

    res = _run(tmp_path, tiny_prepared, method="satimp", retain_loss="nll", retain_weight=0.1, max_steps=1,
               track_geffect=True, geffect_probe_size=PROBE_ROWS, max_grad_norm=1e-3,
               retain_holdout="none")  # the retain probe is then the first retain90 rows, as _probe_batch builds
    init, tok = _loaded(str(tiny_prepared.target))
    model = copy.deepcopy(init)
    inputs = res.trainer.last_inputs
    objective = objectives.get("satimp", retain_loss="nll", retain_weight=0.1)
    table = GEffectTracker.load(tmp_path / "analysis").table()
    logs = [r for r in res.trainer.state.log_history if "geffect/forget" in r]
    assert len(logs) == 1
    for probe, split in (("forget", "forget10"), ("retain", "retain90")):
        direct = gradient_effect(model, objective, inputs, _probe_batch(tok, split))
        rows = table[(table["step"] == 1) & (table["probe"] == probe)]
        tracked = rows.pivot(index="instance", columns="group", values="value").loc[:, list(direct.groups)]
        tracked = torch.tensor(tracked.to_numpy(), dtype=direct.matrix.dtype)
        err = (tracked - direct.matrix).norm() / direct.matrix.norm()
        assert err < 1e-5, f"{probe}: rel err {err:.2e}"
        assert logs[0][f"geffect/{probe}"] == pytest.approx(float(direct.total), rel=1e-5)


def test_trainable_regex_freezes_the_rest(tmp_path, tiny_prepared):
    res = _run(tmp_path, tiny_prepared, method="ga", max_steps=1, trainable=r"layers\.1\.mlp")
    init, _ = _loaded(str(tiny_prepared.target))
    trained = dict(res.model.named_parameters())
    for n, p in init.named_parameters():
        assert torch.equal(trained[n].detach(), p) == ("layers.1.mlp" not in n), n


def test_tracked_geffect_invariant_to_accumulation(tmp_path, tiny_prepared):
    """4 rows × 1 step equals 2 rows × 2 accumulated micro-batches (NPO averages over instances)."""
    from geffect import GEffectTracker

    tables = []
    for bs, accum in ((4, 1), (2, 2)):
        out = tmp_path / f"b{bs}"
        _run(out, tiny_prepared, method="npo", retain_loss="none", max_steps=1, per_device_train_batch_size=bs,
             gradient_accumulation_steps=accum, track_geffect=True, geffect_probe_size=4, log_token_weights=False)
        t = GEffectTracker.load(out / "analysis").table()
        tables.append(torch.tensor(t.sort_values(["probe", "instance", "group"])["value"].to_numpy()))
    assert (tables[0] - tables[1]).norm() / tables[0].norm() < 1e-5


@pytest.mark.parametrize("method", ["tnpo", "satimp", "npo"])
def test_probe_pg_effects_and_weights_equal_direct_computation(method, tmp_path, tiny_prepared):
    """Step 1 of the tracked run is computed at the initial weights: the tracker's probe-mode
    PG-effects equal a per-instance loop (``engine="loop"``) of ``instance_effect`` there, and the
    recorded probe weights equal the objective's own weights on the probe (one reference model,
    the trainer's: for TNPO/NPO at step 1 it equals the model, so the weights are those at p = p_ref)."""
    from geffect import GEffectTracker, instance_effect
    from unlearning import objectives
    from unlearning.data import probe_batches
    from unlearning.runs import PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS

    res = _run(tmp_path, tiny_prepared, method=method, max_steps=2, track_geffect=True, geffect_probe_size=4,
               pg_effect=True, pg_instances="probe", probe_weights=True, optim="sgd")
    assert res.trainer.ref_model is None or getattr(res.trainer.objective, "needs_reference")
    record = GEffectTracker.load(res.analysis_dir)
    assert record.pg_steps == [1, 2] and record.step_tables == [PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS]
    model0, tok = _loaded(str(tiny_prepared.target))
    model0 = copy.deepcopy(model0).eval()
    from unlearning.training import build_datasets

    _, forget, retain = build_datasets(_args(tmp_path, method=method), tok, model0,
                                       data=DataSource(embedded=_tiny_data_config()))
    probes = probe_batches({"forget": forget, "retain": retain}, size=4, pad_token_id=tok.pad_token_id)
    pg = record.pg_table()
    for probe in ("forget", "retain"):
        want = instance_effect(model0, probes["forget"], probes[probe], engine="loop").matrix.double()  # (N, G)
        got = pg[(pg.step == 1) & (pg.probe == probe)].pivot(index="instance", columns="group", values="value")
        got = got.reindex(index=probes["forget"]["index"].tolist(), columns=record.manifest["groups"].keys())
        rel = (torch.tensor(got.to_numpy()) - want).norm() / want.norm()
        assert rel < 1e-5, (probe, float(rel))
    objective = objectives.get(method)
    batch = {k: probes["forget"][k] for k in ("input_ids", "attention_mask", "labels")}
    rb = {k: probes["retain"][k] for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        out = objective(model0, {"forget": batch, "retain": rb}, ref_model=model0)
    tokens = record.step_table(PROBE_TOKEN_WEIGHTS)
    tokens = tokens[tokens.step == 1]
    mask = batch["labels"] != -100
    assert len(tokens) == int(mask.sum())
    inst = record.step_table(PROBE_INSTANCE_WEIGHTS)
    inst = inst[inst.step == 1]
    kind = {"tnpo": "token_mean", "satimp": "token_mean", "npo": "instance"}[method]
    assert (inst["kind"] == kind).all()
    if kind == "token_mean":
        want_w = out.token_weights.double()
        assert torch.allclose(torch.tensor(tokens["weight"].to_numpy()), want_w[mask], rtol=1e-5, atol=1e-7)
        want_i = (want_w * mask).sum(1) / mask.sum(1)
    else:
        want_i = out.instance_weights.double().flatten()
    assert torch.allclose(torch.tensor(inst["weight"].to_numpy()), want_i, rtol=1e-5, atol=1e-7)


def test_retain_term_holds_out_the_evaluated_retain_rows(tmp_path, tiny_prepared):
    """--retain-holdout eval (default): the retain term never sees the rows the evaluation
    measures (retain_perturbed, or its first N rows); 'none' keeps every retain row."""
    from unlearning.data import EmbeddedConfig
    from unlearning.training import build_datasets

    model, tok = _loaded(str(tiny_prepared.target))
    source = DataSource(embedded=EmbeddedConfig(num_authors=12, qa_per_author=8, num_real_authors=8))
    evaluated = set(source.load_split("retain_perturbed")["question"])
    all_retain = source.load_split("retain90")["question"]
    assert evaluated <= set(all_retain) and len(evaluated) < len(all_retain)
    _, _, retain = build_datasets(_args(tmp_path), tok, model, data=source)
    assert not set(retain.questions) & evaluated and len(retain) == len(all_retain) - len(evaluated)
    _, _, first2 = build_datasets(_args(tmp_path, retain_holdout_rows=2), tok, model, data=source)
    assert len(first2) == len(all_retain) - 2
    assert not set(first2.questions) & set(source.load_split("retain_perturbed")["question"][:2])
    _, _, everything = build_datasets(_args(tmp_path, retain_holdout="none"), tok, model, data=source)
    assert everything.questions == list(all_retain)


def test_gradient_checkpointing_tracks_the_same_geffects(tmp_path, tiny_prepared):
    """--gradient_checkpointing (what 1B-8B runs use) recomputes activations in the training backward;
    the gradient - hence every tracked G-effect and PG-effect - is the same, and the ghost pass (eval
    mode, where Hugging Face models do not checkpoint) still sees every layer's inputs."""
    from geffect import GEffectTracker

    tables = {}
    for gc in (False, True):
        out = tmp_path / f"gc-{gc}"
        res = _run(out, tiny_prepared, method="npo", max_steps=2, gradient_checkpointing=gc, track_geffect=True,
                   geffect_probe_size=4, pg_effect=True)
        assert res.trainer.model.is_gradient_checkpointing == gc
        record = GEffectTracker.load(out / "analysis")
        tables[gc] = (record.table(view=None), record.pg_table(view=None))
    for a, b in zip(tables[True], tables[False]):
        assert len(a) == len(b) > 0
        assert torch.allclose(torch.tensor(a["value"].to_numpy()), torch.tensor(b["value"].to_numpy()), rtol=1e-6, atol=1e-9)
