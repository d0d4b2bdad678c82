"""Console scripts: `bwsk-compile` and `bwsk-demo`."""
