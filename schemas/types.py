"""Annotated field types shared by every message model (CONTRACT §2).

Each type validates the *JSON* representation strictly (the value produced by
``json.loads``), and also accepts the already-typed Python value so that
service code can build models directly (``Decimal``, ``date``, aware
``datetime``).
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator, Strict, StringConstraints, WithJsonSchema

__all__ = [
    "MONEY_PATTERN",
    "CURRENCY_PATTERN",
    "COUNTRY_PATTERN",
    "DATE_PATTERN",
    "DATETIME_PATTERN",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_EMAIL_LENGTH",
    "MAX_COMMENT_LENGTH",
    "MAX_INT",
    "Money",
    "Currency",
    "Country",
    "Id",
    "Text",
    "Name",
    "Email",
    "Comment",
    "StrictDate",
    "AwareDatetime",
    "Version",
    "DunningLevel",
    "PositiveQty",
    "NonNegativeQty",
    "format_datetime",
]

#: at most 15 digits before and 6 after the decimal point (CONTRACT §2), counted as written
MONEY_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,6})?$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# RFC 3339 date-time (section 5.6): "T" separator, seconds required, offset required.
DATETIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321's longest forward path
MAX_COMMENT_LENGTH = 2000
#: Largest integer accepted anywhere: fits a signed 64-bit column (PostgreSQL BIGINT).
MAX_INT = 2**63 - 1

_MONEY_RE = re.compile(MONEY_PATTERN.strip("^$"))
_DATE_RE = re.compile(DATE_PATTERN.strip("^$"))
_DATETIME_RE = re.compile(DATETIME_PATTERN.strip("^$"))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- money ---------------------------------------------------------------


# The string forms are parsed once per distinct string: prices and dates repeat across events, and
# the values are immutable. Only strings reach the caches (anything else may be unhashable).


@functools.lru_cache(maxsize=4096)
def _money_from_string(value: str) -> Decimal:
    if _MONEY_RE.fullmatch(value) is None:
        raise ValueError("must be a non-negative decimal string like '12.50', "
                         "at most 15 digits before and 6 after the point")
    return Decimal(value)


def _validate_money(value: Any) -> Decimal:
    if isinstance(value, str):
        return _money_from_string(value)
    if isinstance(value, Decimal):  # Python-side construction only
        if not value.is_finite() or value < 0:
            raise ValueError("must be a finite non-negative decimal")
        return value
    raise ValueError(f"must be a decimal string like '12.50', not {_type_name(value)}")


Money = Annotated[
    Decimal,
    PlainValidator(_validate_money),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["12.50"]}),
]

# --- strings ---------------------------------------------------------------

Currency = Annotated[str, Strict(), StringConstraints(pattern=CURRENCY_PATTERN)]
Country = Annotated[str, Strict(), StringConstraints(pattern=COUNTRY_PATTERN)]
Id = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
#: Free text without a limit of its own (the message's 512 KiB bound it): any JSON string.
Text = Annotated[str, Strict()]
#: Bounded free text (CONTRACT §2), in characters: a person's or account's name, an e-mail address
#: (not checked further: the contract asks for none, and no rule reads it), a decision's comment.
Name = Annotated[str, Strict(), StringConstraints(max_length=MAX_NAME_LENGTH)]
Email = Annotated[str, Strict(), StringConstraints(max_length=MAX_EMAIL_LENGTH)]
Comment = Annotated[str, Strict(), StringConstraints(max_length=MAX_COMMENT_LENGTH)]

# --- dates and times -----------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _date_from_string(value: str) -> date:
    if _DATE_RE.fullmatch(value) is None:
        raise ValueError("must be a date string YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a calendar date") from None


def _validate_date(value: Any) -> date:
    if isinstance(value, str):
        return _date_from_string(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError(f"must be a date string YYYY-MM-DD, not {_type_name(value)}")


StrictDate = Annotated[
    date,
    PlainValidator(_validate_date),
    PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix."""
    text = value.astimezone(timezone.utc).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _validate_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        if _DATETIME_RE.fullmatch(value) is None:
            raise ValueError("must be an RFC 3339 date-time with offset, e.g. 2027-01-10T09:00:00Z")
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            raise ValueError(f"{value!r} is not a valid date-time") from None
    elif isinstance(value, datetime):  # Python-side construction only
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be timezone-aware")
        parsed = value
    else:
        raise ValueError(f"must be an RFC 3339 date-time string, not {_type_name(value)}")
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValueError("date-time out of range") from None


#: RFC 3339 date-time with a mandatory offset; normalised to UTC; written with "Z".
AwareDatetime = Annotated[
    datetime,
    PlainValidator(_validate_datetime),
    PlainSerializer(format_datetime, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}),
]

# --- integers (strict JSON ints: no bools, strings or floats) ---------------

Version = Annotated[int, Strict(), Field(ge=1, le=MAX_INT)]
DunningLevel = Annotated[int, Strict(), Field(ge=1, le=4)]
PositiveQty = Annotated[int, Strict(), Field(gt=0, le=MAX_INT)]
NonNegativeQty = Annotated[int, Strict(), Field(ge=0, le=MAX_INT)]
