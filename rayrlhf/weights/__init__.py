"""The policy's weights on their way from the learners to the rollout workers: the transport
(flat tensors, a broadcast group) and the controller's publisher (synchronous and asynchronous)."""
