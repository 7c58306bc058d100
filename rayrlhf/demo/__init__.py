"""The real demo's data preparation (movie-review text for SFT, reward model and PPO)."""
