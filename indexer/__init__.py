"""indexer role package."""
