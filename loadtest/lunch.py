"""The lunch shape as a pure function of time: a compressed service day (10:30 → 14:00) played in
``duration_s`` seconds, in orders per second. locust's ``LoadTestShape`` (locustfile.py) turns it
into a user count."""

from __future__ import annotations

from dataclasses import dataclass

DAY_START_MIN = 10 * 60 + 30  # 10:30
DAY_END_MIN = 14 * 60  # 14:00
PEAK_FACTOR = 3.0
FULL_DURATION_S = 600.0
SMOKE_DURATION_S = 60.0

# (name, from, to) in minutes of the day; the rate goes linearly from the first factor to the second.
PHASES: tuple[tuple[str, int, int, float, float], ...] = (
    ("quiet morning", 10 * 60 + 30, 11 * 60 + 30, 1.0, 1.0),
    ("rise", 11 * 60 + 30, 12 * 60, 1.0, PEAK_FACTOR),
    ("plateau", 12 * 60, 12 * 60 + 30, PEAK_FACTOR, PEAK_FACTOR),
    ("decline", 12 * 60 + 30, 13 * 60 + 30, PEAK_FACTOR, 1.0),
    ("afternoon", 13 * 60 + 30, 14 * 60, 1.0, 1.0),
)


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    clock: str  # "11:30–12:00"


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class Lunch:
    """``base_rate`` orders/s in the quiet hours, ``PEAK_FACTOR`` times that on the plateau."""

    base_rate: float = 2.0
    duration_s: float = FULL_DURATION_S

    @property
    def seconds_per_minute(self) -> float:
        return self.duration_s / (DAY_END_MIN - DAY_START_MIN)

    def phases(self) -> list[Phase]:
        scale = self.seconds_per_minute
        return [
            Phase(name, (a - DAY_START_MIN) * scale, (b - DAY_START_MIN) * scale, f"{_clock(a)}–{_clock(b)}")
            for name, a, b, _, _ in PHASES
        ]

    def factor(self, t_s: float) -> float | None:
        """The multiple of the base rate at ``t_s`` seconds into the run; None once the day is over."""
        if t_s < 0 or t_s >= self.duration_s:
            return None
        minute = DAY_START_MIN + t_s / self.seconds_per_minute
        for _, a, b, f0, f1 in PHASES:
            if a <= minute < b:
                return f0 + (f1 - f0) * (minute - a) / (b - a)
        return 1.0

    def rate(self, t_s: float) -> float | None:
        """Orders per second wanted at ``t_s``; None once the day is over."""
        factor = self.factor(t_s)
        return None if factor is None else self.base_rate * factor

    def clock(self, t_s: float) -> str:
        """The service-day time that ``t_s`` seconds into the run stands for."""
        return _clock(int(DAY_START_MIN + t_s / self.seconds_per_minute))
