"""Decimal <-> integer units, the one conversion at every edge (SDK, config, admin).

On the wire and in the engine every price, quantity and amount is an int64 count of
units: a price is price_units = price * 10**price_decimals, a quantity likewise with the
symbol's qty_decimals, cash with risk.cash_decimals, ratios in basis points (4 decimals). A value that
does not convert exactly is refused, never rounded.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation


def to_units(value, decimals: int, step: int = 1, what: str = "value", step_name: str = "step") -> int:
    """value (Decimal, str or int; never float) as an integer count of 10**-decimals units,
    a multiple of step. ValueError names `what` when it is not exact."""
    if isinstance(value, float):
        raise TypeError(f"{what}: pass a Decimal, str or int, not a float ({value!r})")
    try:
        d = Decimal(value).scaleb(decimals)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a number") from None
    if not d.is_finite() or d != d.to_integral_value():
        raise ValueError(f"{what} {value} has more than {decimals} decimals")
    units = int(d)
    if units % step:
        raise ValueError(f"{what} {value} is not a multiple of the {step_name} {Decimal(step).scaleb(-decimals)}")
    return units


def from_units(units: int, decimals: int) -> Decimal:
    return Decimal(units).scaleb(-decimals)
