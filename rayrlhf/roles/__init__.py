"""One plain class per role; rayrlhf.cluster turns them into Ray actors."""
