"""converters/fsutil.py: atomic writes."""

import os

from odorch.converters.fsutil import _UMASK, atomic_write_json


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp's 0600 must not leak into reports and datasets other users read."""
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    with open(tmp_path / "b.json", "w") as f:
        f.write("{}")
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o666 & ~_UMASK
