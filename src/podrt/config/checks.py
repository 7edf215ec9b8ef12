"""What a configuration value must be: attrs validators that name the rule broken.

They run on every construction of the schema's classes, and the loader
(layers.py) runs them field by field to name the exact key and file.
"""

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import attrs


class ConfigError(Exception):
    """Invalid configuration; the message is a single line naming file and key."""


class UnknownRuntimeHandler(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Invalid(ValueError):  # field/sub: where below the checked class
    def __init__(self, msg: str, field: str | None = None, sub: tuple = ()) -> None:
        super().__init__(msg)
        self.field, self.sub = field, sub


def show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)  # true/false, "quoted"
    return text if len(text) <= 80 else text[:77] + "..."


TOML_TYPES = ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), ((list, tuple), "array"))


def got(value: Any) -> str:
    """TOML type name and value, e.g. 'string "abc"'; datetimes keep their Python name."""
    if isinstance(value, dict):
        return "table"
    kind = next((n for t, n in TOML_TYPES if isinstance(value, t)), type(value).__name__)
    return f"{kind} {show(value)}"


# -------------------------------------------------------------- validators
# attrs-style validators (instance, attribute, value); they never look at the
# instance, so the loader can run them per field to report the exact key.
Validator = Callable[[Any, Any, Any], None]


def check(pred: Callable[[Any], Any], must: str) -> Validator:
    def validate(_inst: Any, _attr: Any, value: Any) -> None:
        if not pred(value):
            raise Invalid(f"{must}, got {show(value)}")
    return validate


def one_of(*choices: str) -> Validator:
    quoted = [json.dumps(c) for c in choices]
    alts = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
    return check(lambda v: v in choices, f"must be {alts}")


def in_range(lo: int, hi: int | None = None) -> Validator:
    must = f"must be >= {lo}" if hi is None else f"must be between {lo} and {hi}"
    return check(lambda v: lo <= v and (hi is None or v <= hi), must)


def matches(regex: str, must: str) -> Validator:
    return check(lambda v: re.fullmatch(regex, v) is not None, must)


def each(validator: Validator) -> Validator:
    def validate(inst: Any, attr: Any, value: Any) -> None:
        for i, item in enumerate(value):
            try:
                validator(inst, attr, item)
            except Invalid as e:
                raise Invalid(str(e), sub=(f"[{i}]",)) from None
    return validate


absolute = check(os.path.isabs, "must be an absolute path")
nonempty = check(bool, "must not be empty")
positive = check(lambda v: v > 0 and math.isfinite(v), "must be a finite number > 0")
OCTAL_RE = r"(?:0o|0)?[0-7]{1,3}"
SIZE_RE = r"([1-9][0-9]*)(k|Ki|M|Mi|G|Gi)?"
SIZE_UNITS = {None: 1, "k": 10**3, "Ki": 2**10, "M": 10**6, "Mi": 2**20,
               "G": 10**9, "Gi": 2**30}


def setting(default: Any, *validators: Validator) -> Any:
    """A config field: default plus validators (all run on every construction)."""
    validator = attrs.validators.and_(*validators) if validators else None
    if isinstance(default, dict):
        return attrs.field(factory=lambda: dict(default), validator=validator)
    return attrs.field(default=default, validator=validator)


absolute_or_derived = check(lambda v: v == "" or os.path.isabs(v), "must be an absolute path")  # "": derived

