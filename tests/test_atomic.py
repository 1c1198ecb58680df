"""atomic_write: the target is either the old file or the complete new one, never a partial one."""

import numpy as np
import pytest

from pixdiff.atomic import atomic_write, atomic_write_text


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def half(p):
        p.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_suffix_kept_for_format_sniffing_writers(tmp_path):
    out = atomic_write(tmp_path / "sub" / "x.npz", lambda p: np.savez(p, a=np.arange(3)))
    assert np.load(out)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.npz"]
