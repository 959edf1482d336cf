"""Helpers of the test suite: tiny datasets, configs and batches, repository-script loading, shared
checks, and the scripts the data-parallel tests start under torchrun. Nothing here is collected as a test."""
