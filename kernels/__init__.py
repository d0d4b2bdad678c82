"""Triton code generation and runtime for reversible coupling blocks."""
