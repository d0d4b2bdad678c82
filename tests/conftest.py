import os
import sys

import pytest
import torch

# The verifier raises the recursion limit on first use; raising it up front keeps hypothesis
# from warning that a test changed it.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))

# Without CUDA, Triton kernels run in its CPU interpreter; triton.jit reads this when a kernel is
# decorated, so it is set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The suite runs one pytest worker per core (`make test`: -n 2); a second intra-op thread per
# worker only contends for the same cores (tiny backward passes ran 30x slower under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def kernel_cache(tmp_path_factory):
    """Generated Triton kernel files go to a fresh folder, never to the user's cache."""
    folder = tmp_path_factory.mktemp("bwsk-kernels")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BWSK_KERNEL_CACHE", str(folder))
        yield folder


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip without CUDA; `interpreter` tests (Triton on CPU tensors) skip where CUDA compiles the kernels instead."""
    cuda = torch.cuda.is_available()
    compiled = cuda and os.environ.get("TRITON_INTERPRET") != "1"
    needs_cuda = pytest.mark.skipif(not cuda, reason="gpu test: needs CUDA, and this machine has none")
    needs_interpreter = pytest.mark.skipif(
        compiled, reason="Triton on CPU tensors needs TRITON_INTERPRET=1; on this CUDA machine the gpu-marked tests cover the kernels"
    )
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(needs_cuda)
        if item.get_closest_marker("interpreter"):
            item.add_marker(needs_interpreter)
