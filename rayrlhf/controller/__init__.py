"""The single controller's parts, shared by every driver in :mod:`rayrlhf.loops`: the step loop
(stop signals, checkpoint cadence, learner restarts, failures), the sampler (prompt cursor, steps
in flight), the chunk runner (dispatch, replacement of dead workers) and held-out evaluation."""
