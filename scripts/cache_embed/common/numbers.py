"""Numbers formatted for their scale, shared by metrics.md, the HTML report and the model card.

fmt(0.0002) is "2e-4", not "0.000"; fmt(0.95) is "0.950"; fmt(12142) is "12,142"; None is "n/a".
"""

from __future__ import annotations

import math


def fmt(value, digits: int = 3) -> str:
    """A number with `digits` decimals from 0.01 up, two significant digits between 0.001 and
    0.01 ("0.0049"), and scientific notation below ("2e-4", "1.5e-5")."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "n/a"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude < 0.001:
            mantissa, exponent = f"{value:.1e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        if magnitude < 0.01:
            return f"{value:.2g}"
        if magnitude >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def pct(value, digits: int = 1) -> str:
    """A share as a percentage: 0.0213 -> "2.1%", 0.0002 -> "0.02%", 0 -> "0%"."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "n/a"
    percent = 100.0 * value
    if percent == 0:
        return "0%"
    if abs(percent) < 10**-digits:
        return f"{percent:.1g}%"
    return f"{percent:.{digits}f}%"


def signed(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = fmt(float(value), digits)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def interval(low, high, formatter=fmt) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{formatter(low)}, {formatter(high)}]"
