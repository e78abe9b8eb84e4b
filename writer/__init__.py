"""writer role package."""
