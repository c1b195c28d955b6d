"""Every ingest listener the package ships has the whole ``Listener`` port (no probing)."""

from __future__ import annotations

import pytest

from headend.ingest.hooks import CommandReads
from headend.ingest.result import BaseListener, Listener
from headend.rules.engine import RuleEngine
from headend.serve.streams import StreamPublisher
from headend.vee.intervals import IntervalLearner
from headend.vee.listener import VeeListener

#: listener -> (outbox queue name, kept from before the port named it; republish flag)
SHIPPED = {RuleEngine: ("RuleEngine", False), VeeListener: ("VeeListener", False),
           IntervalLearner: ("intervals", False), StreamPublisher: ("StreamPublisher", True),
           CommandReads: ("command_reads", False)}


@pytest.mark.parametrize("cls", list(SHIPPED), ids=lambda c: c.__name__)
def test_shipped_listeners_have_the_whole_port(cls: type) -> None:
    name, again = SHIPPED[cls]
    assert cls.name == name and cls.republish_on_redelivery is again
    for method in ("on_stored", "on_watermark", "close"):
        assert callable(getattr(cls, method)), method
    assert set(Listener.__annotations__) <= set(dir(cls))


def test_base_listener_defaults() -> None:
    class Mine(BaseListener):
        def on_stored(self, batch: object) -> None:
            pass

    m = Mine()
    assert m.name == "" and m.republish_on_redelivery is False
    m.on_watermark(1)
    m.close()
    with pytest.raises(NotImplementedError):
        BaseListener().on_stored(None)  # type: ignore[arg-type]
