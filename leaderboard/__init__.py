"""The record store, comparisons and renderers."""
