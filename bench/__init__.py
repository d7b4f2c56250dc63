"""Benchmarks that print figures (`make bench`); none of them asserts a speed."""
