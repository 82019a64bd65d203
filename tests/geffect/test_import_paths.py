"""Every import path of geffect's reshaped modules keeps working: the packages re-export their
modules' names, and ``geffect.shards`` (merged into ``geffect.distributed``) imports with a
``DeprecationWarning`` for one release."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import geffect.distributed as distributed


def test_shards_is_a_deprecated_alias_of_distributed():
    sys.modules.pop("geffect.shards", None)
    with pytest.warns(DeprecationWarning, match="geffect.shards is deprecated.*geffect.distributed"):
        shards = importlib.import_module("geffect.shards")
    assert shards.__all__ and all(getattr(shards, n) is getattr(distributed, n) for n in shards.__all__)


def test_the_package_itself_no_longer_imports_the_deprecated_module():
    """A fresh interpreter importing every geffect module by its new path gets no deprecation of ours."""
    code = ("import warnings; warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    import geffect, geffect.distributed, geffect.masking, geffect.attribution, geffect.replay, geffect.tracker\n"
            "print([str(w.message) for w in seen if 'geffect' in str(w.message)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("module,names", [
    ("geffect.masking", ["MASK_FORMAT", "SCOPES", "Mask", "apply_mask_to_gradients", "check_mask", "kept_count",
                         "load_mask", "mask_metadata", "mask_overlap", "mask_summary", "masked_direction",
                         "masked_geffect", "module_subtype", "module_type", "save_mask", "weight_mask"]),
    ("geffect.attribution", ["DEFAULT_GAMMA", "METHODS", "REDUCTIONS", "accumulate_gradients", "attribute_and_save",
                             "attribute_weights", "linear_weights"]),
    ("geffect.distributed", ["broadcast_object", "fsdp_modules", "full_tensor", "gathered_parameters", "gather_objects",
                             "is_distributed", "is_dtensor", "is_sharded", "max_over_ranks", "rank_world", "reshard",
                             "shard_positions", "sum_across_ranks"]),
    ("geffect.replay", ["ENTRY_POINT_GROUP", "ReplayArguments", "checkpoints", "main", "replay", "resolve_objective"]),
    ("geffect", ["apply_mask_to_gradients", "attribute_and_save", "attribute_weights", "load_mask", "mask_overlap",
                 "mask_summary", "masked_direction", "masked_geffect", "save_mask", "weight_mask"]),
])
def test_names_importable_where_they_were(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, missing
    assert set(names) <= set(getattr(mod, "__all__", names))


def test_removed_dead_code_is_gone():
    import geffect.io

    assert not hasattr(distributed, "local_tensor") and not hasattr(distributed, "gather_rows")
    assert not hasattr(geffect.io, "atomic_write_bytes")
