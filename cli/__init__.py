"""Command-line interface: `degrade` and `sr` click groups. Only this package prints."""

from degrader.threads import prepare_openmp

prepare_openmp()  # OpenMP reads OMP_WAIT_POLICY once, when torch loads it: before any command imports torch
