"""Track G-effects during unlearning and append them to disk as they are computed.

Wang et al. (ICLR 2025) follow G-effects over training steps, per layer and per instance,
and also plot their cumulative sum over steps. :class:`GEffectTracker` holds fixed probe sets
(forget, retain, any named set); at each tracked step it computes, for every probe set, the
matrix ``E[i, g] = <grad_g R(x_i), d_g>`` (:func:`geffect.per_instance_dots`) for the given
direction d (the gradient the optimizer uses), and writes it immediately.

On-disk format (``output_dir/geffect/``)::

    manifest.json              probes, sizes, instance ids, groups, views, steps done (atomic)
    step_000012.parquet        G-effect rows of step 12: step, probe, instance, view, group, value
    pg_step_000012.parquet     PG-effect rows (optional): same columns, instance = unlearning instance

Each part file is written to a temporary name and moved into place with ``os.replace``, then
the manifest is rewritten the same way, so a killed run leaves only complete files; the part
files on disk are the source of truth for which steps are done, and a tracker created on an
existing directory resumes (skips those steps). ``view`` is ``"fine"`` for the fine groups and
the coarse scheme's name (e.g. ``"thirds"``) for the coarse groups; both are computed in the
same pass. Values are float32 matrices stored as float64 columns.

Beside the G-effects a tracker may keep what a later replay needs (:mod:`geffect.replay`):
``probes.pt`` (the probe batches, :meth:`GEffectTracker.save_probes`) and
``batches_step_000012.pt`` (the micro-batches a step's direction was computed from,
:meth:`GEffectTracker.write_step_batches`); both are ``torch.save`` files of plain tensors.

Processes: by default a tracker is a single-process object (in multi-process training only one
process should own it). With ``distributed=True`` every rank of the process group owns one and
calls it at the same steps: rank r computes the rows of probe instances r, r + W, ... with the
full direction (:mod:`geffect.distributed`), rank 0 gathers the rows and is the only one that
touches the disk, so the tracking work per rank falls as 1/W.

The package, one job per module:

- :mod:`geffect.tracker.config`: :class:`GEffectConfig`, what to track and how (validated once);
- :mod:`geffect.tracker.writer`: :class:`GEffectTracker`, tracking during a run (writes);
- :mod:`geffect.tracker.record`: :class:`GEffectRecord`, reading a folder (``GEffectTracker.load``);
- :mod:`geffect.tracker.ranks`: how the rows are split over ranks and passes and gathered back.
"""
from geffect.tracker.config import COARSE_SCHEMES, GROUP_SCHEMES, PG_INSTANCES, GEffectConfig
from geffect.tracker.ranks import RankSplit
from geffect.tracker.record import COLUMNS, MANIFEST, PG_TABLE, PROBES_FILE, SUBDIR, GEffectRecord, load
from geffect.tracker.writer import GEffectTracker

# the file names of the folder (MANIFEST, COLUMNS, PG_TABLE, PROBES_FILE) stay importable but private
__all__ = ["COARSE_SCHEMES", "GEffectConfig", "GEffectRecord", "GEffectTracker", "GROUP_SCHEMES", "PG_INSTANCES",
           "RankSplit", "SUBDIR", "load"]
