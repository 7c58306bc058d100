"""The one typed config tree: loaded from YAML, overridden with dotted ``--set`` pairs, frozen.

Every field has a one-line description and a range; a bad value fails at start with the field's
dotted path and what is allowed (:class:`ConfigError`). Nothing else in the package reads YAML or
command-line strings: roles receive this frozen tree (or the section they need).
"""

from rayrlhf.config.algorithm import AlgorithmConfig, AlgorithmName
from rayrlhf.config.base import ConfigError, PathStr, Placement
from rayrlhf.config.loading import (
    apply_overrides,
    check_local_paths,
    from_dict,
    load,
    parse_override,
    to_dict,
)
from rayrlhf.config.offline import DPOConfig, ILQLConfig
from rayrlhf.config.roles import (
    DataConfig,
    EngineConfig,
    LearnerConfig,
    LoraConfig,
    ModelConfig,
    OnlineConfig,
    ReferenceConfig,
    RewardConfig,
    WeightSyncConfig,
)
from rayrlhf.config.rollout import EnvWorkersConfig, RolloutConfig, VllmConfig
from rayrlhf.config.run import RunConfig, TimeoutsConfig
from rayrlhf.config.stages import (
    EvalConfig,
    OverlongRule,
    RewardModelConfig,
    SFTConfig,
    TableConfig,
    TableFormat,
)
from rayrlhf.config.tasks import ReasoningGymConfig
from rayrlhf.config.tree import Config

__all__ = [
    "AlgorithmConfig",
    "AlgorithmName",
    "Config",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "EvalConfig",
    "LearnerConfig",
    "ModelConfig",
    "OverlongRule",
    "ReasoningGymConfig",
    "OnlineConfig",
    "PathStr",
    "Placement",
    "LoraConfig",
    "ReferenceConfig",
    "RewardConfig",
    "RewardModelConfig",
    "DPOConfig",
    "ILQLConfig",
    "EnvWorkersConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "TableConfig",
    "TableFormat",
    "TimeoutsConfig",
    "VllmConfig",
    "WeightSyncConfig",
    "apply_overrides",
    "check_local_paths",
    "from_dict",
    "load",
    "parse_override",
    "to_dict",
]
