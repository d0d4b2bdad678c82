"""Analysis results for people and tools: JSON, rich tables, DOT/SVG phase graphs, `--print-after` notes, units."""
