"""One training run and the folder it writes.

`config` (TrainConfig; imports only names), `run` (`train`, the loop), `state` (the loop's
counters and peak memory), `optimizer` (the step, clipping, divergence), `data` (text, tokens,
batches), `evaluation` (perplexity), `interrupt` (Ctrl-C, resume command), `checkpoint`,
`run_folder` (every file a run writes), `progress`, `field_types` (JSON read back, checked).
"""
