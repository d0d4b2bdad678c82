"""Compiler passes over the combinator IR; each pass is one file, listed by name in `bwsk.passes.manager.PASSES`.

Importing this package imports no pass: `bwsk.passes.pipeline.analyze` runs them,
`bwsk.passes.manager.PassManager` runs a chosen pipeline.
"""
