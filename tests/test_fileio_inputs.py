"""fileio's checks on what a command reads: no pipe, socket or device (they block or never end)."""

import os
import re
import socket

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import refuse_special_inputs


def test_special_inputs_refused_by_kind(tmp_path):
    """stat tells the kind without opening it: files and directories pass, missing paths are the command's."""
    (tmp_path / "f.json").write_text("{}")
    os.mkfifo(tmp_path / "p")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    try:
        refuse_special_inputs({"results": tmp_path / "f.json", "dir": tmp_path, "none": None,
                               "missing": tmp_path / "nope", "list": [tmp_path / "f.json", tmp_path]})
        for path, kind in ((tmp_path / "p", "a named pipe (FIFO)"), (tmp_path / "s", "a socket"),
                           ("/dev/null", "a character device")):
            with pytest.raises(ShiptwoError, match=rf"^{path}: input spec is {re.escape(kind)}, not a regular file"):
                refuse_special_inputs({"results": tmp_path / "f.json", "spec": [tmp_path, path]})
    finally:
        sock.close()
