"""consumers role package."""
