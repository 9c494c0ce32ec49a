"""A tiny Django app holding the jobs the benchmarks enqueue."""
