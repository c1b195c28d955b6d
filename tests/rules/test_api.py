"""The public surface of headend.rules."""

from __future__ import annotations

from headend import rules
from headend.rules.config import CONFIG_BY_KIND
from headend.rules.engine import RULE_FACTORIES


def test_every_exported_name_exists_once() -> None:
    assert len(rules.__all__) == len(set(rules.__all__)) == 29
    assert [n for n in rules.__all__ if not hasattr(rules, n)] == []


def test_every_config_kind_has_a_runtime_rule_and_back() -> None:
    assert sorted(CONFIG_BY_KIND) == sorted(RULE_FACTORIES)
    assert len(RULE_FACTORIES) == 12
