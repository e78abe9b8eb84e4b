"""The workloads of issue 6, one function each: ``(Context) -> result dict``."""
