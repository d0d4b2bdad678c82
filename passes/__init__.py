"""Compiler passes over the combinator IR; each pass is one file, registered by name."""
