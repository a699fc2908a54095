"""The persona's own local day: date, weekday, time, season, holidays.

``DateTimeTool(country=..., timezone=...).execute(day_offset=...)`` is the seed
API. The time zone is always the persona's (an IANA name, or a fixed
``+08:00`` offset); the server's own zone never leaks in. Holidays come from the
``holidays`` package with the name language chosen explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
SOUTHERN_COUNTRIES = {"AR", "AU", "BO", "BR", "BW", "CL", "LS", "MG", "MZ", "NA", "NZ", "PY", "PE",
                      "SZ", "UY", "ZA", "ZW", "FJ"}


def parse_timezone(name: str | None, utc_offset: str | None = None) -> tzinfo:
    """An IANA zone (tzdata), else a fixed offset like ``+08:00``; error names the value."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    for candidate in (utc_offset, name):
        if candidate:
            match = _OFFSET.match(str(candidate).strip())
            if match:
                sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
                if hours > 14 or minutes > 59:
                    break
                delta = timedelta(hours=hours, minutes=minutes)
                return timezone(delta if sign == "+" else -delta)
    raise ValueError(f"unknown time zone {name or utc_offset!r}: use an IANA name such as "
                     "'Asia/Shanghai' or an offset such as '+08:00'")


def season_for(day: date, southern: bool) -> str:
    seasons = ("winter", "spring", "summer", "autumn")
    index = {12: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 3, 10: 3, 11: 3}[day.month]
    return seasons[(index + 2) % 4] if southern else seasons[index]


@dataclass
class DateTimeTool:
    country: str | None = None
    timezone: str | None = None
    utc_offset: str | None = None
    subdivision: str | None = None
    language: str = "en_US"
    latitude: float | None = None
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    def __post_init__(self) -> None:
        self.tz = parse_timezone(self.timezone, self.utc_offset)
        self.country = (self.country or "").upper() or None

    def local_now(self) -> datetime:
        return self.now().astimezone(self.tz)

    def holidays_on(self, day: date) -> list[str]:
        if not self.country:
            return []
        import holidays

        try:
            calendar = holidays.country_holidays(self.country, subdiv=self.subdivision, years=day.year,
                                                 language=self.language)
        except NotImplementedError:
            raise ValueError(f"no public holidays known for country {self.country!r}"
                             + (f" subdivision {self.subdivision!r}" if self.subdivision else "")) from None
        names = calendar.get_list(day)
        return sorted(set(names))

    def execute(self, day_offset: int = 0) -> dict[str, Any]:
        now = self.local_now()
        day = now.date() + timedelta(days=int(day_offset))
        southern = self.latitude < 0 if self.latitude is not None else self.country in SOUTHERN_COUNTRIES
        holiday_names = self.holidays_on(day)
        seconds = int((now.utcoffset() or timedelta(0)).total_seconds())
        hours, minutes = divmod(abs(seconds) // 60, 60)
        return {
            "date": day.isoformat(),
            "weekday": day.strftime("%A"),
            "local_time": now.strftime("%H:%M"),
            "day_offset": int(day_offset),
            "season": season_for(day, southern),
            "timezone": getattr(self.tz, "key", None) or str(self.tz),
            "utc_offset": f"{'+' if seconds >= 0 else '-'}{hours:02d}:{minutes:02d}",
            "country": self.country,
            "holidays": holiday_names,
            "is_holiday": bool(holiday_names),
            "is_weekend": day.weekday() >= 5,
        }
