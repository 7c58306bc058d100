"""rayrlhf: distributed RLHF (SFT, reward models, PPO) on Ray with a DeepSpeed learner."""

__version__ = "0.1.0"
