"""The Lark grammar of the bwsk IR text form, and example programs (package data)."""
