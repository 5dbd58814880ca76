"""The tiny insightface pack (tests/faces/tiny_insightface_pack.py) both of its test files use."""

from __future__ import annotations

import pytest

from tests.faces.tiny_insightface_pack import write_pack


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    write_pack(root)
    return root
