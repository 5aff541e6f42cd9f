"""The one list of library versions and the one file hash."""

import hashlib
from importlib.metadata import version

from ftlab.fingerprint import LIBRARIES, file_sha256, library_versions


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    path = tmp_path / "x.bin"
    data = b"abc" * 700_000  # 2.1 MB: more than one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_library_versions_are_the_installed_ones():
    found = library_versions(installed_only=False)
    assert list(found) == list(LIBRARIES)
    assert found["torch"] == version("torch") and found["transformers"] == version("transformers")
    assert "unsloth" not in library_versions() or found["unsloth"] is not None
