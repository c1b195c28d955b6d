"""Admission: which commands of a request are queued, which rejected at once, and why.

:func:`admit` is pure: it takes what the registry knows of the meters asked for
(:class:`MeterFacts`, built by :func:`meter_facts` from a
:class:`~headend.store.registry.MeterRegistry` in a few vectorised look-ups) and answers
one :class:`~headend.commands.lifecycle.Command` per meter, ``queued`` or ``rejected``
with the first reason of :data:`headend.model.commands.REJECTIONS` that applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.commands.lifecycle import Command
from headend.errors import ValidationError
from headend.model import commands as C

if TYPE_CHECKING:
    from headend.store.registry import MeterRegistry

__all__ = ["CommandRequest", "MeterFacts", "admit", "command_ids", "meter_facts"]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One request: a kind for some meters, by someone, for a reason.

    Attributes
    ----------
    kind : str
        A :data:`~headend.model.commands.KIND_BY_NAME` key.
    meter_ids : sequence of str
        The meters; a repeated id counts once (its first place).
    actor : str
        Who asks (recorded in the audit log).
    reason : str or None
        Why (free text, kept as the command's detail); needed with ``force``.
    command_id : str or None
        The idempotency key: one meter -> the command id is ``command_id``; several
        -> ``command_id:meter_id``. None: a random id per command.
    confirm : bool
        Confirms a disconnect of more than
        :data:`~headend.model.commands.CONFIRM_ABOVE` meters (``--yes``).
    force : bool
        Overrides a ``critical_care`` refusal; needs ``reason``.
    expires_in_s : int or None
        Time to expiry [s]; None: the kind's default.
    allowed_kinds : frozenset of str or None
        The kinds the caller may send (None: all).
    """

    kind: str
    meter_ids: Sequence[str]
    actor: str
    reason: str | None = None
    command_id: str | None = None
    confirm: bool = False
    force: bool = False
    expires_in_s: int | None = None
    allowed_kinds: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in C.KIND_BY_NAME:
            raise ValidationError(f"unknown command kind {self.kind!r} (one of "
                                  f"{', '.join(C.KIND_BY_NAME)})")
        if not self.meter_ids:
            raise ValidationError("a command needs at least one meter")
        if self.force and not (self.reason and self.reason.strip()):
            raise ValidationError("force needs a reason (who forced it and why is audited)")
        if self.expires_in_s is not None and self.expires_in_s <= 0:
            raise ValidationError(f"expires_in_s must be positive, not {self.expires_in_s}")
        if self.command_id is not None and not self.command_id.strip():
            raise ValidationError("an empty command id")


@dataclass(frozen=True, slots=True)
class MeterFacts:
    """What the registry knows of each meter asked for (arrays aligned with the ids).

    ``known`` false: not in the registry (the other fields are then ignored);
    ``commodity``: :class:`~headend.model.codes.Commodity`; ``collector_id``: None
    when the registry has none.
    """

    meter_ids: Sequence[str]
    known: npt.NDArray[np.bool_]
    two_way: npt.NDArray[np.bool_]
    commodity: npt.NDArray[np.uint8]
    critical_care: npt.NDArray[np.bool_]
    collector_id: Sequence[str | None]


def meter_facts(registry: MeterRegistry, meter_ids: Sequence[str]) -> MeterFacts:
    """Look the meters up in ``registry`` (one vectorised pass per column)."""
    idx = registry.idx_for_id(pa.array(list(meter_ids), pa.string()))
    known = idx >= 0
    k = idx[known]
    n = len(idx)

    def col(name: str, dtype: type) -> npt.NDArray[np.generic]:
        out: npt.NDArray[np.generic] = np.zeros(n, dtype)
        if len(k):
            out[known] = registry.attribute(name, k).to_numpy(zero_copy_only=False)
        return out

    coll: list[str | None] = [None] * n
    if len(k):
        for i, c in zip(np.flatnonzero(known).tolist(),
                        registry.attribute("collector_id", k).to_pylist(), strict=True):
            coll[i] = c or None
    return MeterFacts(list(meter_ids), known, col("two_way", np.bool_).astype(np.bool_),
                      col("commodity", np.uint8).astype(np.uint8),
                      col("critical_care", np.bool_).astype(np.bool_), coll)


def command_ids(base: str | None, meter_ids: Sequence[str]) -> list[str]:
    """The id of each meter's command: ``base`` for one meter, ``base:meter_id`` for
    several, a random 80-bit id per command without ``base`` (16 characters of base32,
    ``[a-z2-7]``: short, so that the store stays small, and never taken for an option)."""
    if base is None:
        import base64
        import secrets

        return [base64.b32encode(secrets.token_bytes(10)).decode().lower()
                for _ in meter_ids]
    if len(meter_ids) == 1:
        return [base]
    return [f"{base}:{m}" for m in meter_ids]


def admit(request: CommandRequest, facts: MeterFacts, *, now_ms: int) -> list[Command]:
    """One command per distinct meter of ``request``, ``queued`` or ``rejected``.

    The checks, in :data:`~headend.model.commands.REJECTIONS` order; the first that
    fails is the reason: unknown meter, kind not allowed to the caller, kind that does
    not fit the commodity, one-way meter, no collector, a disconnect of more than
    :data:`~headend.model.commands.CONFIRM_ABOVE` meters without ``confirm``, a
    ``critical_care`` meter without ``force`` (a forced one is queued, and its detail
    says who forced it and why).

    ``facts`` must describe ``request.meter_ids`` in the same order.
    """
    if list(facts.meter_ids) != list(request.meter_ids):
        raise ValidationError("meter facts do not match the request's meters")
    kind = C.KIND_BY_NAME[request.kind]
    seen: dict[str, int] = {}
    for i, m in enumerate(request.meter_ids):
        seen.setdefault(m, i)
    keep = np.array(sorted(seen.values()), np.int64)
    meters = [request.meter_ids[i] for i in keep]
    known, two_way = facts.known[keep], facts.two_way[keep]
    commodity = facts.commodity[keep]
    care = facts.critical_care[keep]
    has_coll = np.array([facts.collector_id[i] is not None for i in keep], np.bool_)
    n = len(keep)
    allowed = request.allowed_kinds is None or request.kind in request.allowed_kinds
    fits = np.isin(commodity, np.array(kind.commodities, np.uint8))
    disconnect = request.kind == "disconnect"
    too_many = disconnect and n > C.CONFIRM_ABOVE and not request.confirm
    checks = [  # (fails, reason) in REJECTIONS order
        (~known, "meter_unknown"),
        (np.full(n, not allowed), "not_allowed"),
        (~fits, "kind_unfit"),
        (~two_way, "meter_one_way"),
        (~has_coll, "no_collector"),
        (np.full(n, too_many), "confirmation_needed"),
        (care & disconnect & (not request.force), "critical_care"),
    ]
    assert [r for _, r in checks] == list(C.REJECTIONS)
    reason_idx = np.full(n, -1, np.int64)
    for j, (fails, _) in enumerate(checks[::-1]):  # the first check wins: apply it last
        reason_idx[fails] = len(checks) - 1 - j
    names = [r for _, r in checks]
    ids = command_ids(request.command_id, meters)
    expires_ms = now_ms + 1000 * (request.expires_in_s or kind.expires_s)
    forced = care & disconnect & request.force
    out: list[Command] = []
    for i in range(n):
        r = int(reason_idx[i])
        detail = request.reason
        if r < 0 and forced[i]:
            detail = f"forced past critical_care by {request.actor}: {request.reason}"
        code = (C.control_code(request.kind, int(commodity[i]))
                if known[i] and fits[i] else None)
        out.append(Command(
            ids[i], request.kind, meters[i], "queued" if r < 0 else "rejected",
            None if r < 0 else names[r], detail, request.actor, now_ms, now_ms, expires_ms,
            facts.collector_id[int(keep[i])] if known[i] else None, code))
    return out
