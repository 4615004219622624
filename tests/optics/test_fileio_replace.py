"""optics.fileio.replace_durably: a temporary file filled elsewhere becomes the final file."""
import pytest

from optics.fileio import replace_durably, tmp_path_for


@pytest.mark.parametrize("fsync", [True, False])
def test_replace_durably_renames_and_replaces(tmp_path, fsync):
    final = tmp_path / "out.h5"
    final.write_bytes(b"old")
    tmp = tmp_path_for(final)
    tmp.write_bytes(b"new content")
    assert replace_durably(tmp, final, fsync=fsync) == final
    assert final.read_bytes() == b"new content" and not tmp.exists()
    with pytest.raises(FileNotFoundError):  # nothing to rename: the caller learns it
        replace_durably(tmp, final, fsync=fsync)
