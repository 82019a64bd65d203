"""Models: load any causal LM, and build the small default target / retain models.

- :mod:`unlearning.models.loading`: :func:`load_model`, :func:`load_tokenizer`,
  :func:`load_model_and_tokenizer`, :class:`ModelError`.
- :mod:`unlearning.models.default`: :class:`DefaultRecipe`, :func:`tiny_recipe`,
  :func:`tiny_source`, :func:`prepare_default_models` (cached, with a memorisation report),
  :func:`train_tokenizer`, :func:`build_model`.
- :mod:`unlearning.models.training`: :func:`fine_tune` (the training loop), its settings
  :class:`FineTuneConfig`, and :class:`MemorisationStop` (train until the answers are memorised).
- :mod:`unlearning.models.text`: :func:`prepare_text_models` (the same pair for raw-text
  benchmarks: MUSE, WMDP; cached).
- :mod:`unlearning.models.accuracy`: :func:`answer_token_accuracy`, :func:`memorisation_scores`.

See docs/models.md.
"""
from unlearning.models.accuracy import (
    answer_accuracy_from_logits,
    answer_token_accuracy,
    memorisation_scores,
    per_instance_answer_accuracy,
)
from unlearning.models.default import (
    TINY_EMBEDDED,
    DefaultRecipe,
    PreparedModels,
    build_model,
    clear_cache,
    default_cache_dir,
    fit_max_length,
    llama_config,
    load_training_data,
    prepare_default_models,
    tiny_recipe,
    tiny_source,
    train_tokenizer,
)
from unlearning.models.text import prepare_text_models
from unlearning.models.loading import (
    ModelError,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_dtype,
)
from unlearning.models.training import FineTuneConfig, MemorisationStop, fine_tune, make_dataset

__all__ = [
    "DefaultRecipe",
    "FineTuneConfig",
    "MemorisationStop",
    "ModelError",
    "PreparedModels",
    "TINY_EMBEDDED",
    "answer_accuracy_from_logits",
    "answer_token_accuracy",
    "build_model",
    "clear_cache",
    "default_cache_dir",
    "fine_tune",
    "fit_max_length",
    "llama_config",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "load_training_data",
    "make_dataset",
    "memorisation_scores",
    "per_instance_answer_accuracy",
    "prepare_default_models",
    "prepare_text_models",
    "resolve_dtype",
    "tiny_recipe",
    "tiny_source",
    "train_tokenizer",
]
