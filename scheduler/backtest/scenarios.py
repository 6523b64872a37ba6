"""What-if scenarios: the same period and data with hashprice, GPU count or AI load scaled.

Decides only how a sweep is written on the command line and what each factor scales; building
the scaled world is scheduler.backtest.build's job.
- `hashprice=0.8,1,1.2`: the BTC price (hence hashprice and R_mine) times each factor;
- `gpus=0.5,1,2`: every site's GPU node count times each factor (rounded);
- `load=0.5,1,1.5`: the request rate times each factor.
"""

from __future__ import annotations

from dataclasses import dataclass

SWEEP_AXES = ("hashprice", "gpus", "load")


@dataclass(frozen=True)
class Scenario:
    name: str = "base"
    hashprice_scale: float = 1.0
    gpu_scale: float = 1.0
    load_scale: float = 1.0


BASE = Scenario()


def parse_sweep(text: str | None) -> tuple[Scenario, ...]:
    """'hashprice=0.8,1,1.2' -> three scenarios; None or '' -> the base scenario only."""
    if not text:
        return (BASE,)
    axis, _, values = text.partition("=")
    axis = axis.strip()
    if axis not in SWEEP_AXES or not values:
        raise ValueError(
            f"sweep {text!r}: expected AXIS=F1,F2,... with AXIS one of {', '.join(SWEEP_AXES)}"
        )
    out: list[Scenario] = []
    for part in values.split(","):
        try:
            factor = float(part)
        except ValueError:
            raise ValueError(f"sweep {text!r}: {part!r} is not a number") from None
        if factor < 0:
            raise ValueError(f"sweep {text!r}: factors must not be negative")
        name = f"{axis}x{factor:g}"
        if axis == "hashprice":
            out.append(Scenario(name, hashprice_scale=factor))
        elif axis == "gpus":
            out.append(Scenario(name, gpu_scale=factor))
        else:
            out.append(Scenario(name, load_scale=factor))
    return tuple(out)
