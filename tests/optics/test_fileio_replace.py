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


def test_sha256_file_matches_the_reference_digest(tmp_path):
    # FIPS 180-2 test vector "abc", and a file larger than one read block
    from optics.fileio import sha256_file

    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    import hashlib
    big = bytes(range(256)) * 5000  # 1.28 MB > the 1 MiB block
    (tmp_path / "big").write_bytes(big)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(big).hexdigest()


def test_save_figure_writes_atomically_and_closes_the_figure(tmp_path):
    """A long sweep saves hundreds of figures: each must be released after saving (pyplot keeps
    open figures alive until closed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optics.fileio import save_figure
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "a.png", dpi=20)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary left behind
    fig2, _ = plt.subplots()
    save_figure(fig2, tmp_path / "b.png", close=False, dpi=20)
    assert fig2.number in plt.get_fignums()
    plt.close(fig2)
