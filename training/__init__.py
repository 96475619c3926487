"""lstep.training package."""
