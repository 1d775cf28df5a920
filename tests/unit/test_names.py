from __future__ import annotations

import pytest

from aienv.errors import InvalidInput
from aienv.names import check_name, is_valid_name


@pytest.mark.parametrize("name", ["a", "hello", "llm-lab", "x_1", "0abc", "a" * 63])
def test_valid(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", "_a", "Hello", "a.b", "a/b", "..", "a b", "a" * 64, "ä", "a\x00"]
)
def test_invalid(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidInput, match="1-63 characters"):
        check_name(name)
