"""How a stack of coupling blocks trains without storing its activations, and how a Hugging Face model becomes one.

In import order: `errors`; `coupling` (Step, Half, CouplingBlock, the blocks' RNG seeds);
`seams` (the stream arithmetic around each half: torch or fused Triton); `function`
(the autograd Function that rebuilds inputs in backward); `drift` (measuring the rebuild
error); `stack` (segments, float64 streams, anchors); `discover` (F and G of each layer from
the couple pass); `convert` (`make_reversible`); `remote_code` (the modeling file a saved folder
carries, `modeling_bwsk_reversible`: the model without bwsk, imported by nothing here); `huggingface`
(the `bwsk_reversible` model type). Nothing here imports the modes, the trainer or the experiments.
"""
