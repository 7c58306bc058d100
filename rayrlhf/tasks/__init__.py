"""Supervised training tasks run by :class:`rayrlhf.roles.supervised.SupervisedLearner`."""
