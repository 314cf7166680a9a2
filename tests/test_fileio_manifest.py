"""One manifest scheme (fileio.tree_digests / tree_problems) for the store, releases and verdict bundles."""

from shiptwo.fileio import sha256_bytes, tree_digests, tree_problems


def test_tree_digests_and_every_kind_of_mismatch(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00\x01")
    (tmp_path / "manifest.json").write_text("{}")
    digests = tree_digests(tmp_path, exclude=("manifest.json",))
    assert digests == {"a.txt": sha256_bytes(b"a"), "sub/b.bin": sha256_bytes(b"\x00\x01")}
    assert list(digests) == sorted(digests)
    assert tree_problems(tmp_path, digests, exclude=("manifest.json",)) == []

    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "sub" / "b.bin").unlink()
    (tmp_path / "extra").write_text("x")
    problems = tree_problems(tmp_path, digests, exclude=("manifest.json",))
    assert problems == [f"{tmp_path / 'a.txt'}: SHA-256 differs from the manifest (tampered or corrupt)",
                        f"{tmp_path / 'sub' / 'b.bin'}: missing",
                        f"{tmp_path / 'extra'}: extra file not in the manifest"]
    assert len(tree_problems(tmp_path, digests, allow_extra=True)) == 2
