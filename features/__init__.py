"""lstep.features package."""
