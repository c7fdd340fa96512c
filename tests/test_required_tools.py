"""What CI requires (`REQUIRE_*=1`, set by .ci/run) fails when missing; elsewhere it is a skip."""

from __future__ import annotations

import pytest
from conftest import BakeEnvironments

NO_SUCH_PYTHON = "3.99"


def test_a_missing_python_fails_the_bake_tests_when_pythons_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUIRE_PYTHONS", "1")

    with pytest.raises(
        pytest.fail.Exception, match=f"no Python {NO_SUCH_PYTHON} .*REQUIRE_PYTHONS"
    ):
        BakeEnvironments().for_version(NO_SUCH_PYTHON)


def test_a_missing_python_skips_the_bake_tests_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUIRE_PYTHONS", raising=False)

    with pytest.raises(pytest.skip.Exception, match=f"no Python {NO_SUCH_PYTHON} "):
        BakeEnvironments().for_version(NO_SUCH_PYTHON)
