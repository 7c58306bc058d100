"""rayrlhf: distributed RLHF (SFT, reward models, PPO) on Ray with a DeepSpeed learner."""

from __future__ import annotations

import importlib.abc
import sys

__version__ = "0.1.0"


class _NoAssistedGenerationSklearn(importlib.abc.MetaPathFinder):
    """transformers' assisted generation (a draft model's candidate tokens), which rayrlhf never
    runs, imports scikit-learn's metrics when the generation module loads, wherever scikit-learn
    is installed (MLflow, a tracker extra, pulls it in): 0.8 s of scipy and scikit-learn in every
    process that generates or loads a model, each actor's start included. Just before that
    module loads, its check of scikit-learn is answered "absent"; nothing is imported here, and
    nothing happens in a process that never loads it."""

    TARGET = "transformers.generation.candidate_generator"

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == self.TARGET:
            utils = sys.modules.get("transformers.utils")
            if utils is not None:  # loaded before its subpackage's modules, always
                utils.is_sklearn_available = lambda: False
            sys.meta_path.remove(self)  # once is enough
        return None  # the regular finders load the module


if not any(isinstance(f, _NoAssistedGenerationSklearn) for f in sys.meta_path):
    sys.meta_path.insert(0, _NoAssistedGenerationSklearn())
