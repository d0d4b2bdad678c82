"""The demo's data: a short text written for bwsk, and a word-level tokenizer trained on it (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

DEMO_TEXT = """\
A network stores what it computes on the way forward so that it can learn on the way back.
Every stored tensor waits in memory until the backward pass reads it.
A layer that keeps its input can be recomputed instead of stored.
A layer that erases part of its input cannot be run backwards.
An injective step keeps everything it was given.
An erasing step throws something away for good.
A residual block adds its input to what its branch computes.
Two streams that update each other in turn can be rebuilt from their outputs.
The first stream is rebuilt by subtracting what the second one added.
The second stream is rebuilt by subtracting what the first one added.
A reversible stack keeps one pair of streams instead of every activation.
Its memory stays flat as the stack grows deeper.
Checkpointing keeps one input per block and runs the block again in backward.
Selective checkpointing keeps the outputs that are expensive to compute.
It recomputes the outputs that are cheap to compute.
The analysis decides which outputs are cheap and which are expensive.
A norm erases the mean and the scale of its input.
A softmax erases a constant shift of its input.
A projection to fewer features erases the rest.
A rotation of the features keeps everything.
A model that erases nothing could be inverted step by step.
A language model reads a sequence of tokens and predicts the next one.
Its loss is the negative log probability of the token that really came next.
Perplexity is the exponential of the mean loss over every scored token.
A lower perplexity means the model is less surprised by the text.
Each token is scored once, with as much context as the window allows.
A short run that turns into not a number has learned nothing.
A run that turns into not a number stops and says at which step.
Training resumes from its last checkpoint with the same data order.
The same seed gives the same weights after the same steps.
Two seeds of one setup show how much the result moves by chance.
A difference smaller than that spread says nothing about the setups.
The optimizer keeps two running averages for every weight.
Its state is often larger than the activations of a short sequence.
The peak of a training step is set by whatever is alive at one moment.
Longer sequences and deeper stacks make the activations dominate.
Mixed precision computes in sixteen bits and keeps the weights in thirty two.
The gradient is clipped so that one bad batch cannot throw the weights away.
The learning rate rises during warmup and then falls along a cosine.
Early stopping ends the run when the validation loss stops improving.
The best weights by validation loss are the ones that are tested.
A memory tracker counts the bytes of every tensor by its role.
Parameters, gradients, optimizer state and activations are counted apart.
On a graphics card the allocator reports the highest mark it reached.
The stack of blocks is found by looking for the largest list of equal layers.
The attention half and the feed forward half become the two functions of a coupling.
The converted model computes a new function and is trained to recover.
The rebuild error grows with depth and is measured during training.
An anchor stores a pair of streams where the error would grow too large.
A small model learns this text in a few seconds on a laptop.
A large model learns a large text in a few days on many cards.
The numbers that matter are the ones measured side by side.
"""


def demo_tokenizer(text: str = DEMO_TEXT):
    """A word-level `tokenizers.Tokenizer` over the words and punctuation of `text` (plus [UNK])."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    return tokenizer


def write_demo_inputs(folder: Path) -> tuple[Path, Path]:
    """The demo text and its tokenizer.json in `folder`; returns their paths."""
    text, tokenizer = folder / "demo.txt", folder / "tokenizer.json"
    text.write_text(DEMO_TEXT)
    demo_tokenizer().save(str(tokenizer))
    return text, tokenizer
