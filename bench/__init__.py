"""bench role package."""
