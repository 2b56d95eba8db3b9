"""The result of one diagnostic or health check, and how it goes on the wire.

A check is evidence gathering (I/O) plus a pure ``evaluate_*`` function that
turns evidence into :class:`CheckResult` values. What callers may rely on:

* ``CheckResult`` is immutable and holds plain strings only, so it can be
  compared in tests, logged, and serialised with :meth:`CheckResult.to_json`.
* Every ``warn``/``fail``/``error`` result carries at least one remediation step;
  the catalogue recoveries are named through :func:`recover_command` so their
  spelling matches ``novaops recover`` exactly.
* :func:`to_proto` adds what the pure layer does not know (node, time, event id).
* :func:`evidence_from_plain` builds an evidence dataclass from JSON-like data,
  which is how the data-driven tests feed the evaluate functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import itertools
import types
import typing
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from novaops.v1 import common_pb2


class Status(enum.StrEnum):
    """Outcome of a check, in the order of severity."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"


_STATUS_TO_PROTO = {
    Status.OK: common_pb2.CHECK_STATUS_OK,
    Status.WARN: common_pb2.CHECK_STATUS_WARN,
    Status.FAIL: common_pb2.CHECK_STATUS_FAIL,
    Status.ERROR: common_pb2.CHECK_STATUS_ERROR,
}


class Recovery(enum.StrEnum):
    """The recovery catalogue (issue 5): the only actions ``novaops recover`` runs."""

    RESTART_DOMAIN = "restart-domain"
    RESUME_DOMAIN = "resume-domain"
    REPAIR_NETWORK = "repair-network"
    REMOVE_STALE_LOCKS = "remove-stale-locks"
    TERMINATE_ORPHANS = "terminate-orphans"
    RECONNECT_LIBVIRT = "reconnect-libvirt"


def recover_command(action: Recovery, node: str, target: str = "") -> str:
    """The exact ``novaops recover`` command line for a catalogue action."""
    command = f"novaops recover {action.value} --node {node}"
    return f"{command} --target {target}" if target else command


@dataclasses.dataclass(frozen=True)
class RemediationStep:
    """One numbered step: what to do, and the exact command ("" when none applies)."""

    description: str
    command: str = ""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one target, without node, time or event id."""

    check_id: str
    target: str
    status: Status
    summary: str
    evidence: Mapping[str, str] = dataclasses.field(default_factory=dict)
    remediation: tuple[RemediationStep, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain data (for logs, tests and ``--output json`` renderers)."""
        return {
            "check_id": self.check_id,
            "target": self.target,
            "status": self.status.value,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "remediation": [
                {"description": s.description, "command": s.command} for s in self.remediation
            ],
        }


def result(
    check_id: str,
    target: str,
    status: Status,
    summary: str,
    evidence: Mapping[str, object] | None = None,
    remediation: Iterable[RemediationStep] = (),
) -> CheckResult:
    """A CheckResult whose evidence values are stringified (bools as "true"/"false")."""
    return CheckResult(
        check_id=check_id,
        target=target,
        status=status,
        summary=summary,
        evidence={key: _evidence_text(value) for key, value in (evidence or {}).items()},
        remediation=tuple(remediation),
    )


def _evidence_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    return str(value)


def error_result(check_id: str, target: str, message: str) -> CheckResult:
    """The result of a check whose evidence could not be gathered."""
    return result(
        check_id,
        target,
        Status.ERROR,
        message,
        {"error": message},
        [
            RemediationStep(
                "Check the executor's log for why the evidence could not be read",
                "journalctl -u novaops-executor --since -1h",
            )
        ],
    )


def worst_status(results: Iterable[CheckResult]) -> Status:
    """The most severe status among results; ok for none."""
    order = list(Status)
    return max((r.status for r in results), key=order.index, default=Status.OK)


# Event ids are unique per executor without a random draw (a getrandom syscall)
# per result: a random prefix drawn once per process, then a counter. 32 hex
# digits, like uuid4().hex.
_EVENT_ID_PREFIX = uuid.uuid4().hex[:16]
_EVENT_ID_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A fresh event id (see CheckResult.event_id in the contract)."""
    return f"{_EVENT_ID_PREFIX}{next(_EVENT_ID_COUNTER):016x}"


def timestamp(observed_at: dt.datetime) -> Timestamp:
    """observed_at (timezone-aware) as a protobuf Timestamp in UTC."""
    stamp = Timestamp()
    stamp.FromDatetime(observed_at.astimezone(dt.UTC))
    return stamp


def to_proto(
    result: CheckResult, node: str, observed_at: dt.datetime | Timestamp, event_id: str
) -> common_pb2.CheckResult:
    """The wire message. A datetime observed_at must be timezone-aware (it is sent
    as UTC); callers converting many results at once pass one :func:`timestamp`."""
    stamp = observed_at if isinstance(observed_at, Timestamp) else timestamp(observed_at)
    return common_pb2.CheckResult(
        node=node,
        check_id=result.check_id,
        target=result.target,
        status=_STATUS_TO_PROTO[result.status],
        summary=result.summary,
        evidence=dict(result.evidence),
        remediation=[
            common_pb2.RemediationStep(description=s.description, command=s.command)
            for s in result.remediation
        ],
        observed_at=stamp,
        event_id=event_id,
    )


# -- evidence from plain data (data-driven tests) -------------------------------------------

E = TypeVar("E")


def evidence_from_plain(cls: type[E], data: Any) -> E:
    """Build the frozen evidence dataclass cls from JSON-like data.

    Nested dataclasses, tuples, dicts, ``X | None`` and enums are converted by
    the field annotations; missing fields take their defaults; unknown keys are
    an error (a typo in a data file must not pass silently).
    """
    return typing.cast(E, _convert(cls, data))


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise TypeError(f"{tp.__name__} expects an object, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise TypeError(f"{tp.__name__} has no fields {sorted(unknown)}")
        return tp(**{key: _convert(hints[key], item) for key, item in value.items()})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item) for item in value)
        return tuple(_convert(a, item) for a, item in zip(args, value, strict=True))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        args = typing.get_args(tp) or (str, Any)
        return {_convert(args[0], k): _convert(args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
