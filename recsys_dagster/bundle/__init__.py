"""Versioned model bundles: format and verification (`format`), promotion (`promote`)."""
