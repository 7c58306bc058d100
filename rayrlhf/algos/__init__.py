"""Pure tensor math for RLHF algorithms."""
