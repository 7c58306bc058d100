"""Dataset formats, validation and prompt sources."""
