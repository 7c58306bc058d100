"""Reward functions usable as ``reward.function: rayrlhf.rewards.MODULE:NAME``.

Each takes ``(prompts, responses)`` lists of strings and returns one float per response.
"""
