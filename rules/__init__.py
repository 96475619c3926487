"""lstep.rules package."""
