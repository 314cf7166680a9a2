"""A stored set tampered with after its build: reuse requires the manifest's shape, the complete file
set the build wrote (regular files, each with its SHA-256, nothing unlisted) and the full fingerprint;
each tampering is refused in one line naming the file or field, and `--rebuild` replaces the set."""

from __future__ import annotations

import json
import os

import pytest

from shiptwo.builds import store
from shiptwo.builds.registry import BUILDERS, build
from shiptwo.builds.store import verify
from shiptwo.errors import ShiptwoError

from tests.builds.test_store import counting_builder, store_root  # noqa: F401 (fixtures)


def edit_manifest(root, change):
    path = root / store.ARTIFACT_MANIFEST
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def refused(match):
    """build() refuses the stored set with `match`, and --rebuild replaces it."""
    with pytest.raises(ShiptwoError, match=match + ".*--rebuild") as exc:
        build("toy", "smoke")
    assert "\n" not in str(exc.value)
    again = build("toy", "smoke", rebuild=True)
    assert not again.reused and verify(again.root) is None and again.tokenizer.read_text() == "hello"


def drop(files=(), roles=()):
    def change(m):
        m["files"] = {k: v for k, v in m["files"].items() if k not in files}
        m["roles"] = {k: v for k, v in m["roles"].items() if k not in roles}
        return m
    return change


def test_a_manifest_listing_fewer_files_is_refused(store_root, counting_builder):
    """The entry of a file the build wrote, dropped from the manifest: its bytes went unchecked and
    the set was reused."""
    a = build("toy", "smoke")
    (a.root / "sub" / "b.txt").write_text("tampered")
    edit_manifest(a.root, drop(files=("sub/b.txt",)))
    refused(r"sub/b\.txt: not in the manifest \(it lists fewer files than the set holds\)")


def test_a_manifest_listing_no_file_is_refused(store_root, counting_builder):
    a = build("toy", "smoke")
    edit_manifest(a.root, lambda m: {**m, "files": {}})
    refused(r"a\.txt: not in the manifest")


def test_a_role_whose_file_and_entry_are_gone_is_refused(store_root, counting_builder):
    a = build("toy", "smoke")
    (a.root / "a.txt").unlink()
    edit_manifest(a.root, drop(files=("a.txt",)))
    refused(r"manifest\.json: role tokenizer names a\.txt, which the manifest does not list")


def test_a_set_emptied_with_its_manifest_is_refused(store_root, counting_builder):
    a = build("toy", "smoke")
    for rel in ("a.txt", "sub/b.txt"):
        (a.root / rel).unlink()
    edit_manifest(a.root, drop(files=("a.txt", "sub/b.txt"), roles=("tokenizer", "extra")))
    refused(r"manifest\.json: records no role")


def test_a_file_replaced_by_a_link_to_an_identical_copy_is_refused(store_root, counting_builder, tmp_path):
    """is_file() follows the link, and the copy hashes the same: the set was reused, reading a file
    outside the store that anyone may change after the check."""
    a = build("toy", "smoke")
    outside = tmp_path / "copy.txt"
    outside.write_bytes((a.root / "a.txt").read_bytes())
    (a.root / "a.txt").unlink()
    (a.root / "a.txt").symlink_to(outside)
    refused(r"a\.txt: a symbolic link, not a file the build wrote")


def test_a_directory_where_a_file_was_is_named(store_root, counting_builder):
    a = build("toy", "smoke")
    (a.root / "a.txt").unlink()
    (a.root / "a.txt").mkdir()
    refused(r"a\.txt: a directory where the manifest lists a file")


def test_a_set_directory_replaced_by_a_link_is_refused(store_root, counting_builder, tmp_path):
    a = build("toy", "smoke")
    moved = tmp_path / "elsewhere"
    os.rename(a.root, moved)
    a.root.symlink_to(moved)
    refused(r"a symbolic link, not the set the store built")


@pytest.mark.parametrize("change, says", [
    (lambda m: [m], "a JSON list, not an object"),
    (lambda m: {**m, "files": list(m["files"])}, "field files is not a JSON object"),  # was an AttributeError
    (lambda m: {k: v for k, v in m.items() if k != "roles"}, "field roles is not a JSON object"),  # was a KeyError
    (lambda m: {**m, "roles": {**m["roles"], "tokenizer": 7}}, "role 'tokenizer' does not name a relative path"),
    (lambda m: {**m, "files": {**m["files"], "../../x": "0" * 64}}, r"files entry '../../x' is not a relative path"),
    (lambda m: {**m, "files": {**m["files"], "a.txt": 1}}, "files entry 'a.txt' is not a relative path inside the set with a SHA-256"),
    (lambda m: {**m, "build_seconds": "fast"}, "field build_seconds is not a number"),
])
def test_a_manifest_of_the_wrong_shape_is_refused_by_field(store_root, counting_builder, change, says):
    a = build("toy", "smoke")
    edit_manifest(a.root, change)
    refused(r"manifest\.json: artifact manifest of the wrong shape \(" + says)


def test_a_set_whose_key_collides_is_refused(store_root, counting_builder, monkeypatch):
    """The key is a prefix of the fingerprint's SHA-256: a set built from other inputs under a
    colliding key was reused (its manifest records the same model, profile and key)."""
    monkeypatch.setattr(store, "KEY_DIGITS", 1)  # a collision within a few tries, not 2^32
    first = build("toy", "smoke", text="older")
    key = lambda text: store.store_key(BUILDERS["toy"], BUILDERS["toy"].fingerprint("smoke", {"text": text}))[0]  # noqa: E731
    other = next(t for t in (f"t{i}" for i in range(500)) if key(t) == first.key)
    with pytest.raises(ShiptwoError, match=rf"records the fingerprint \w+, but this build's is \w+ \(another build "
                                           rf"whose key collides with {first.key}\)"):
        build("toy", "smoke", text=other)
    again = build("toy", "smoke", text=other, rebuild=True)
    assert again.tokenizer.read_text() == other and len(counting_builder) == 2


def test_prune_removes_a_link_in_a_sets_place_not_what_it_points_to(store_root, counting_builder, tmp_path):
    """rmtree refused the link: `shiptwo store prune` ended in a traceback."""
    kept = build("toy", "smoke")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "precious.txt").write_text("x")
    link = kept.root.parent / "0123456789abcdef"
    link.symlink_to(tmp_path / "elsewhere")
    assert store.prune({("toy", "smoke"): kept.key}) == [link]
    assert not link.is_symlink() and (tmp_path / "elsewhere" / "precious.txt").read_text() == "x" and verify(kept.root) is None


def test_a_set_shrunk_consistently_is_refused(store_root, counting_builder):
    """A file dropped with its manifest entry and its role: the set verified, was reused as complete,
    and the missing role surfaced only where a consumer asked for it (or never)."""
    a = build("toy", "smoke")
    (a.root / "sub" / "b.txt").unlink()
    edit_manifest(a.root, drop(files=("sub/b.txt",), roles=("extra",)))
    refused(r"manifest\.json: records no extra role, which its builder declares for this build")
    assert build("toy", "smoke").reused and len(counting_builder) == 2  # the honest rebuild is reused


def test_a_role_dropped_from_the_manifest_is_refused(store_root, counting_builder):
    """The role dropped, its file still listed: the set verified and a consumer's `files[role]` raised a
    bare KeyError (an acceptance ERROR reading "KeyError: 'train_state'")."""
    a = build("toy", "smoke")
    edit_manifest(a.root, drop(roles=("extra",)))
    refused(r"manifest\.json: records no extra role")


def test_a_role_the_builder_does_not_declare_is_one_line_naming_the_manifest(store_root, counting_builder):
    a = build("toy", "smoke")
    with pytest.raises(ShiptwoError, match=r"manifest\.json: the artifact set records no train_state role \(roles: extra, tokenizer\)"):
        a.files["train_state"]


@pytest.mark.parametrize("returned, says", [
    ({"tokenizer": "a.txt"}, "no extra role, which it declares"),
    ({"tokenizer": "a.txt", "extra": "a.txt", "more": "a.txt"}, "the more role, which it does not declare"),
])
def test_a_build_returning_other_roles_than_declared_is_an_error(store_root, monkeypatch, returned, says):
    """A builder bug, not a partial set: stored, it would be refused on every reuse (fewer roles) or
    reused once shrunk of a role nobody declared (more)."""
    from shiptwo.builds.store import Builder, Fingerprint
    from shiptwo.fileio import atomic_write_text

    def run(profile, fp, workdir):
        atomic_write_text(workdir / "a.txt", "x")
        return returned, {}, {}

    monkeypatch.setitem(BUILDERS, "short", Builder("short", lambda p, o: Fingerprint({}), run, entry="shiptwo.builds.store",
                                                      roles=lambda p, fp: {"tokenizer", "extra"}))
    with pytest.raises(ShiptwoError, match=r"^build short/smoke: builder returned " + says + "$"):
        build("short", "smoke")
    assert [p.name for p in (store_root / "short" / "smoke").iterdir()] == [store.ARTIFACT_LOCK]
