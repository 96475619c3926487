"""lstep.serving package."""
