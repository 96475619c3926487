"""lstep.models package."""
