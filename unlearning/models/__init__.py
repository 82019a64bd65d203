"""Models: load any causal LM, and build the small default target / retain models.

- :mod:`unlearning.models.loading`: :func:`load_model`, :func:`load_tokenizer`,
  :func:`load_model_and_tokenizer`, :class:`ModelError`.
- :mod:`unlearning.models.default`: :class:`DefaultRecipe`, :func:`tiny_recipe`,
  :func:`prepare_default_models` (cached), :func:`train_tokenizer`, :func:`build_model`.
- :mod:`unlearning.models.text`: :func:`prepare_text_models` (the same pair for raw-text
  benchmarks: MUSE, WMDP; cached).
- :mod:`unlearning.models.accuracy`: :func:`answer_token_accuracy`.

See docs/models.md.
"""
from unlearning.models.accuracy import answer_token_accuracy, per_instance_answer_accuracy
from unlearning.models.default import (
    DefaultRecipe,
    PreparedModels,
    build_model,
    clear_cache,
    default_cache_dir,
    llama_config,
    prepare_default_models,
    tiny_recipe,
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

__all__ = [
    "DefaultRecipe",
    "ModelError",
    "PreparedModels",
    "answer_token_accuracy",
    "build_model",
    "clear_cache",
    "default_cache_dir",
    "llama_config",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "per_instance_answer_accuracy",
    "prepare_default_models",
    "prepare_text_models",
    "resolve_dtype",
    "tiny_recipe",
    "train_tokenizer",
]
