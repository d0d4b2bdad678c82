"""Training in less memory: the reversible runtime, the four training modes, the trainer."""
