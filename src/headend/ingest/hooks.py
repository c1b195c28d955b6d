"""The one registry of ingest listeners: what reacts to newly stored data.

A listener factory takes the opened :class:`~headend.store.DataDir` and returns a
:class:`~headend.ingest.pipeline.Listener`. Verbs and services choose listeners by
name from :data:`LISTENERS` instead of wiring them by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from headend.ingest.pipeline import IngestConfig, Ingestor, Listener, SideCsv
from headend.store import DataDir


def _rules(data: DataDir) -> Listener:
    from headend.rules import RuleEngine

    return RuleEngine.open(data.root, data.registry)


def _intervals(data: DataDir) -> Listener:
    from headend.vee.intervals import IntervalLearner

    return IntervalLearner(data.registry, data.root)


def _vee(data: DataDir) -> Listener:
    from headend.vee import VeeListener

    # the ingestor's registry (its intervals), a store of the run's own
    return VeeListener(data.root, registry=data.registry)


#: name -> factory. ``intervals`` learns undeclared meter intervals from every batch
#: (always on, first, so that VEE sees them); ``rules`` runs the real-time rule engine
#: in event time; ``vee`` validates and estimates what an ingest call stored.
LISTENERS: dict[str, Callable[[DataDir], Listener]] = {
    "intervals": _intervals,
    "rules": _rules,
    "vee": _vee,
}


def open_ingestor(
    root: Path | str,
    *,
    rules: bool = True,
    vee: bool = True,
    extra: Sequence[Listener] = (),
    store_config: Any = None,
    config: IngestConfig | None = None,
) -> Ingestor:
    """Open an :class:`Ingestor` on ``root`` with the standard listeners."""
    data = DataDir.open(Path(root), config=store_config)
    listeners: list[Listener] = []
    names = [n for n, on in (("intervals", True), ("rules", rules), ("vee", vee)) if on]
    for name in names:
        listeners.append(LISTENERS[name](data))
    listeners.extend(extra)
    # stage names in seconds_by_stage; the extras are named by their outbox name
    return Ingestor(data, listeners=listeners, config=config, stages=names,
                    side_csv=side_csv(root))


def side_csv(root: Path | str) -> dict[tuple[str, ...], SideCsv]:
    """The CSV kinds an ingestor hands to a handler instead of the store: the
    commands' ``command_responses`` (applied to ``<root>/commands/``)."""
    from headend.commands.apply import responses_handler
    from headend.model.commands import COMMAND_RESPONSE_HEADER

    return {COMMAND_RESPONSE_HEADER: responses_handler(root)}
