"""Optional weather for the persona's city and day (Open-Meteo's forecast API,
no key). Any failure (offline, timeout, odd answer) returns None: the context
simply has no weather and the node still succeeds."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from typing import Any

logger = logging.getLogger("twitterchat.weather")

# WMO weather interpretation codes, as Open-Meteo reports them.
WMO_CODES = {0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog",
             48: "rime fog", 51: "light drizzle", 53: "drizzle", 55: "dense drizzle", 61: "light rain",
             63: "rain", 65: "heavy rain", 71: "light snow", 73: "snow", 75: "heavy snow",
             80: "rain showers", 81: "rain showers", 82: "violent rain showers", 95: "thunderstorm",
             96: "thunderstorm with hail", 99: "thunderstorm with hail"}


MAX_BODY_BYTES = 1024 * 1024  # a forecast for one day is a few hundred bytes


class _Refused(ValueError):
    """The provider refused the request (HTTP 4xx) or answered too much: asking again won't help."""


def _get_json(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500:
            raise _Refused(f"HTTP {exc.code}") from None
        raise
    if len(body) > MAX_BODY_BYTES:
        raise _Refused(f"an answer over {MAX_BODY_BYTES // 1024} KiB")
    return json.loads(body)


def provider_timezone(name: str) -> str:
    """An IANA zone name as it is; anything else (a fixed offset such as ``UTC+08:00``, which
    Open-Meteo refuses) as ``auto``: the zone of the coordinates."""
    if name in ("UTC", "GMT") or ("/" in name and not name.upper().startswith(("UTC", "GMT", "ETC/"))):
        return name
    return "auto"


def fetch_weather(base_url: str, latitude: float, longitude: float, day: date, timezone_name: str,
                  timeout: float = 3.0, attempts: int = 2) -> dict[str, Any] | None:
    if not base_url:
        return None
    query = urllib.parse.urlencode({
        "latitude": f"{latitude:.4f}", "longitude": f"{longitude:.4f}", "timezone": provider_timezone(timezone_name),
        "daily": "weathercode,temperature_2m_max,temperature_2m_min",
        "start_date": day.isoformat(), "end_date": day.isoformat()})
    url = f"{base_url}?{query}"
    from ..utils.retry import RetryContext  # tenacity, loaded only when weather is asked for

    try:
        data = RetryContext(max_attempts=attempts, initial_delay=0.2,
                            exceptions=(urllib.error.URLError, TimeoutError, ConnectionError)
                            ).execute(_get_json, url, timeout)
        daily = data["daily"]
        code = int(daily["weathercode"][0])
        return {"summary": WMO_CODES.get(code, f"weather code {code}"),
                "temp_max_c": float(daily["temperature_2m_max"][0]),
                "temp_min_c": float(daily["temperature_2m_min"][0])}
    except _Refused as exc:
        logger.warning("weather provider refused the request for %s (%s); continuing without it", day, exc)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        logger.info("no weather for %s (%s); continuing without it", day, type(exc).__name__)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        logger.warning("weather provider answered in an unexpected shape (%s); continuing without it", exc)
    return None
