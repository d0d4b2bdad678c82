"""The kernel cache: a file named by the text's hash, written once, imported once, rewritten if damaged."""

from bwsk.kernels import cache

TEXT = "VALUE = 41\n\n\ndef answer():\n    return VALUE + 1\n"


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
    assert not [p for p in kernel_cache.iterdir() if p.name.startswith(".bwsk-")]


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BWSK_KERNEL_CACHE", str(tmp_path / "elsewhere"))
    path = cache.write(TEXT + "# other\n")
    assert path.parent == tmp_path / "elsewhere" and path.is_file()
    monkeypatch.delenv("BWSK_KERNEL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "bwsk" / "kernels"
