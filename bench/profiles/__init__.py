"""Small measurement scripts behind the profile summaries in ``bench/results/profiles/``."""
