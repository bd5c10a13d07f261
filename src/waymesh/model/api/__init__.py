"""Typed models for the API kinds waymesh reads (conventions in README.md)."""
