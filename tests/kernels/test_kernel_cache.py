"""The kernel cache: a private folder, a file named by the text's hash, and only the generated text ever executed.

Every payload below would create the marker file if it ran: a planted `.pyc`, a damaged or
swapped cache file, a file behind a symbolic link.
"""

import os
import py_compile
import stat
import sys

import pytest
import torch

from bwsk.kernels import cache

TEXT = "VALUE = 41\n\n\ndef answer():\n    return VALUE + 1\n"
KERNEL = """\
import triton
import triton.language as tl


@triton.jit
def double(X, OUT, N, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    tl.store(OUT + cols, 2 * tl.load(X + cols, mask=mask), mask=mask)
"""


def payload(marker) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\n\ndef answer():\n    return 0\n"


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """An empty cache folder that does not exist yet (created by the first use)."""
    folder = tmp_path / "cache" / "kernels"
    monkeypatch.setenv("BWSK_KERNEL_CACHE", str(folder))
    monkeypatch.setattr(cache, "_imported", {})
    return folder


def test_writes_a_file_named_by_hash_and_imports_it(kernel_cache):
    module = cache.load(TEXT)
    path = cache.path_for(TEXT)
    assert path.parent == kernel_cache
    assert path.name == f"bwsk_kernels_{cache.digest(TEXT)}.py"
    assert path.read_text() == TEXT
    assert module.answer() == 42 and module.__file__ == str(path)
    assert cache.load(TEXT) is module


def test_an_existing_file_is_reused_and_a_damaged_one_rewritten(kernel_cache):
    text = TEXT.replace("41", "1")
    path = cache.write(text)
    stamp = path.stat().st_mtime_ns
    assert cache.write(text) == path and path.stat().st_mtime_ns == stamp
    path.write_text("damaged")
    assert cache.write(text) == path and path.read_text() == text
    path.write_text(text + "# longer\n")
    assert cache.write(text) == path and path.read_text() == text
    assert not [p for p in kernel_cache.iterdir() if p.name.startswith(".bwsk-")]


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BWSK_KERNEL_CACHE", str(tmp_path / "elsewhere"))
    path = cache.write(TEXT + "# other\n")
    assert path.parent == tmp_path / "elsewhere" and path.is_file()
    monkeypatch.delenv("BWSK_KERNEL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "bwsk" / "kernels"


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=oct)
def test_the_folder_is_created_private_whatever_the_umask(fresh_cache, umask):
    previous = os.umask(umask)
    try:
        cache.load(TEXT)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh_cache.stat().st_mode) == 0o700


def test_a_file_whose_bytes_are_not_the_text_is_rewritten_never_run(fresh_cache, tmp_path):
    marker = tmp_path / "marker"
    fresh_cache.mkdir(mode=0o700, parents=True)
    path = cache.path_for(TEXT)
    path.write_text(payload(marker))
    assert cache.load(TEXT).answer() == 42
    assert not marker.exists() and path.read_text() == TEXT


@pytest.mark.parametrize("mode", ["unchecked-hash", "timestamp"])
def test_a_planted_pyc_is_never_read(fresh_cache, tmp_path, mode):
    """A `.pyc` next to the file, valid for it (by its timestamp) or valid whatever the source (unchecked hash), never runs."""
    marker = tmp_path / "marker"
    text = TEXT + "# " + "padding " * 20 + "\n"  # longer than the payload, which is padded to its size
    path = cache.write(text)
    planted, stamp = tmp_path / "planted.py", path.stat()
    planted.write_text(payload(marker).ljust(stamp.st_size - 1) + "\n")  # the real file's size and modification time
    os.utime(planted, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    invalidation = {"unchecked-hash": py_compile.PycInvalidationMode.UNCHECKED_HASH, "timestamp": py_compile.PycInvalidationMode.TIMESTAMP}
    pyc = fresh_cache / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(planted), cfile=str(pyc), dfile=str(path), invalidation_mode=invalidation[mode], doraise=True)
    assert cache.load(text).answer() == 42
    assert not marker.exists()


def test_no_bytecode_is_written(fresh_cache):
    cache.load(TEXT)
    assert sorted(p.name for p in fresh_cache.iterdir()) == [cache.path_for(TEXT).name]


def test_a_symlinked_file_is_refused_even_with_the_right_text(fresh_cache, tmp_path):
    fresh_cache.mkdir(mode=0o700, parents=True)
    target = tmp_path / "elsewhere.py"
    target.write_text(TEXT)
    cache.path_for(TEXT).symlink_to(target)
    with pytest.raises(cache.KernelCacheError, match="kernel cache file is a symbolic link"):
        cache.load(TEXT)


def test_a_cache_file_that_is_a_fifo_is_refused(fresh_cache):
    fresh_cache.mkdir(mode=0o700, parents=True)
    os.mkfifo(cache.path_for(TEXT))
    with pytest.raises(cache.KernelCacheError, match="not a regular file"):
        cache.load(TEXT)


def test_a_symlinked_folder_is_refused(monkeypatch, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("BWSK_KERNEL_CACHE", str(tmp_path / "link"))
    with pytest.raises(cache.KernelCacheError, match="folder is a symbolic link") as refused:
        cache.write(TEXT)
    assert len(refused.value.render().splitlines()) == 1 and not list(real.iterdir())


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777], ids=oct)
def test_a_folder_others_can_write_is_refused(fresh_cache, mode):
    fresh_cache.mkdir(parents=True)
    fresh_cache.chmod(mode)
    with pytest.raises(cache.KernelCacheError, match=r"writable by group or others \(mode d") as refused:
        cache.load(TEXT)
    assert str(fresh_cache) in refused.value.render() and not list(fresh_cache.iterdir())


def test_a_folder_of_another_user_is_refused(fresh_cache, monkeypatch):
    fresh_cache.mkdir(mode=0o700, parents=True)
    owner = fresh_cache.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with pytest.raises(cache.KernelCacheError, match=f"owned by user id {owner}, not by you"):
        cache.load(TEXT)


def test_a_folder_that_is_a_file_is_refused(fresh_cache):
    fresh_cache.parent.mkdir(parents=True)
    fresh_cache.write_text("not a folder")
    with pytest.raises(cache.KernelCacheError, match="is not a folder"):
        cache.load(TEXT)


def test_a_folder_under_a_file_is_one_line(fresh_cache):
    fresh_cache.parent.write_text("not a folder")
    with pytest.raises(cache.KernelCacheError, match="cannot create the kernel cache folder") as refused:
        cache.load(TEXT)
    assert len(refused.value.render().splitlines()) == 1


@pytest.mark.interpreter
def test_triton_compiles_the_checked_text_even_if_the_file_changes_afterwards(fresh_cache, tmp_path):
    """triton.jit reads the kernel's source through inspect (lazily, under TRITON_INTERPRET): it gets the checked lines."""
    module = cache.load(KERNEL)
    cache.path_for(KERNEL).write_text(KERNEL.replace("2 * tl.load", "3 * tl.load"))
    x = torch.randn(10)
    out = torch.empty_like(x)
    module.double[(1,)](x, out, 10, BLOCK=16)
    torch.testing.assert_close(out, 2 * x, rtol=0, atol=0)
