import pytest


@pytest.fixture(autouse=True, scope="session")
def kernel_cache(tmp_path_factory):
    """Generated kernel files go to a fresh folder, never to the user's cache."""
    folder = tmp_path_factory.mktemp("bwsk-kernels")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BWSK_KERNEL_CACHE", str(folder))
        yield folder
