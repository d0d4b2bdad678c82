"""The markers the test targets select on: the conftest hook skips `gpu` and `interpreter` tests where they cannot run.

Each test here asserts what its marker promises, so it fails if the hook lets it run where it should not.
"""

import os

import pytest
import torch


@pytest.mark.gpu
def test_a_gpu_test_runs_only_where_cuda_is():
    assert torch.cuda.is_available()


@pytest.mark.interpreter
def test_an_interpreter_test_runs_only_under_the_triton_interpreter():
    assert os.environ.get("TRITON_INTERPRET") == "1"
