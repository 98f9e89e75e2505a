"""The record of one evaluated candidate: :class:`EvalResult`, generated from the result-record
schema (:data:`results.schema.RECORD`), which also gives the study's columns and the report's
metrics, so the keys are written in one place only."""

from __future__ import annotations

from dataclasses import asdict, fields, make_dataclass
from typing import Any

from results.schema import RECORD

__all__ = ["EvalResult"]


def _ok(self: Any) -> bool:
    return self.status == "ok"


def _to_dict(self: Any) -> dict[str, Any]:
    """The record: exactly :data:`results.schema.RECORD_KEYS`, JSON-serializable."""
    return asdict(self)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a result from :meth:`to_dict`'s output (e.g. an Optuna trial's user attributes)."""
    return cls(**{f.name: data[f.name] for f in fields(cls)})


_DOC = "One evaluated candidate: the spec and every figure.\n\nAttributes:\n" + "".join(
    f"    {field.name}: {field.description}.\n" for field in RECORD
)

#: One evaluated candidate (frozen); its fields are :data:`results.schema.RECORD`'s, in order.
EvalResult = make_dataclass(
    "EvalResult",
    [(field.name, field.kind if field.kind is str else field.kind | None) for field in RECORD],
    frozen=True,
    namespace={
        "__doc__": _DOC,
        "__module__": __name__,
        "ok": property(_ok),
        "to_dict": _to_dict,
        "from_dict": classmethod(_from_dict),
    },
)
