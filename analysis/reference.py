"""Reference tables for T- and Z-scores, and the WHO category.

Tables are CSV text (``config/reference/*.csv``; lines starting with ``#`` are comments) with
the columns ``sex, age_min, age_max, mean_g_cm2, sd_g_cm2, kind, source, derived``:

* ``sex`` ``F`` or ``M``; ``age_min <= age < age_max`` in years;
* ``kind`` ``young_adult`` (for T-scores; one row per sex, it applies to patients of any age and
  its age band describes the reference group) or ``age_matched`` (for Z-scores; bands of one
  sex must not overlap);
* ``source`` a citation; ``derived`` ``true`` when the numbers were computed by us rather than
  published (shown with the result).

Scores are never guessed: unknown sex, unknown age, or no matching row omit the score with a
reason. T = (BMD - mean) / SD against the young-adult row; WHO category from T: normal
(T >= -1), osteopenia (-2.5 < T < -1), osteoporosis (T <= -2.5).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

COLUMNS = ("sex", "age_min", "age_max", "mean_g_cm2", "sd_g_cm2", "kind", "source", "derived")
KINDS = ("young_adult", "age_matched")


@dataclass(frozen=True)
class ReferenceRow:
    sex: str
    age_min: float
    age_max: float
    mean_g_cm2: float
    sd_g_cm2: float
    kind: str
    source: str
    derived: bool

    def covers(self, age_years: float) -> bool:
        return self.age_min <= age_years < self.age_max

    @property
    def label(self) -> str:
        return self.source + (" [derived]" if self.derived else "")


@dataclass(frozen=True)
class Scores:
    t_score: float | None = None
    z_score: float | None = None
    who_category: str | None = None
    reference_name: str | None = None
    omitted_reason: str | None = None
    """Why a score is missing (one sentence), or None when both were computed."""


def who_category(t_score: float) -> str:
    """WHO category from a T-score: normal (>= -1), osteopenia, osteoporosis (<= -2.5)."""
    if t_score >= -1.0:
        return "normal"
    if t_score <= -2.5:
        return "osteoporosis"
    return "osteopenia"


def _parse_bool(text: str, where: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "yes", "1"):
        return True
    if t in ("false", "no", "0"):
        return False
    raise ValueError(f"{where}: derived must be true or false, not {text!r}")


def _parse_float(text: str, name: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, not {text!r}")
    return value


def parse_reference_csv(text: str, name: str = "table") -> list[ReferenceRow]:
    """Rows of one CSV text; ValueError with a one-line message naming the line on any problem."""
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{name}: no header line")
    reader = csv.reader(io.StringIO("\n".join(ln for _, ln in lines)))
    header = [h.strip() for h in next(reader)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{name} line {lines[0][0]}: missing column(s) {', '.join(missing)}")
    rows = []
    for (lineno, _), values in zip(lines[1:], reader):
        where = f"{name} line {lineno}"
        if len(values) != len(header):
            raise ValueError(f"{where}: {len(values)} fields, the header has {len(header)}")
        rec = {h: v.strip() for h, v in zip(header, values)}
        sex = rec["sex"].upper()
        if sex not in ("F", "M"):
            raise ValueError(f"{where}: sex must be F or M, not {rec['sex']!r}")
        age_min = _parse_float(rec["age_min"], "age_min", where)
        age_max = _parse_float(rec["age_max"], "age_max", where)
        if not 0 <= age_min < age_max <= 150:
            raise ValueError(f"{where}: need 0 <= age_min < age_max <= 150 years")
        mean = _parse_float(rec["mean_g_cm2"], "mean_g_cm2", where)
        sd = _parse_float(rec["sd_g_cm2"], "sd_g_cm2", where)
        if not 0.05 < mean < 2.0:
            raise ValueError(f"{where}: mean_g_cm2 {mean} is not a plausible DXR-BMD (0.05..2 g/cm2)")
        if not 0 < sd < mean:
            raise ValueError(f"{where}: sd_g_cm2 must be positive and below the mean")
        kind = rec["kind"].lower()
        if kind not in KINDS:
            raise ValueError(f"{where}: kind must be young_adult or age_matched, not {rec['kind']!r}")
        if not rec["source"]:
            raise ValueError(f"{where}: source is empty; cite where the numbers come from")
        rows.append(ReferenceRow(sex, age_min, age_max, mean, sd, kind, rec["source"], _parse_bool(rec["derived"], where)))
    return rows


@dataclass
class ReferenceTables:
    rows: list[ReferenceRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sex in ("F", "M"):
            young = [r for r in self.rows if r.sex == sex and r.kind == "young_adult"]
            if len(young) > 1:
                raise ValueError(f"{len(young)} young_adult rows for sex {sex}; keep exactly one")
            matched = sorted((r for r in self.rows if r.sex == sex and r.kind == "age_matched"), key=lambda r: r.age_min)
            for a, b in zip(matched, matched[1:]):
                if b.age_min < a.age_max:
                    raise ValueError(f"age_matched rows for sex {sex} overlap ({a.age_min}-{a.age_max} and {b.age_min}-{b.age_max})")

    @classmethod
    def from_csv_texts(cls, texts: Iterable[str]) -> "ReferenceTables":
        rows: list[ReferenceRow] = []
        for i, text in enumerate(texts):
            rows.extend(parse_reference_csv(text, name=f"table {i + 1}"))
        return cls(rows)

    def young_adult(self, sex: str) -> ReferenceRow | None:
        return next((r for r in self.rows if r.sex == sex and r.kind == "young_adult"), None)

    def age_matched(self, sex: str, age_years: float) -> ReferenceRow | None:
        return next((r for r in self.rows if r.sex == sex and r.kind == "age_matched" and r.covers(age_years)), None)

    def scores(self, bmd_g_cm2: float, sex: str | None, age_years: float | None) -> Scores:
        """T-score, Z-score and WHO category, each omitted with a reason when it cannot be computed."""
        if sex not in ("F", "M"):
            return Scores(omitted_reason="T- and Z-scores omitted: the patient's sex is not known (PatientSex).")
        young = self.young_adult(sex)
        word = "women" if sex == "F" else "men"
        reasons = []
        t = who = None
        if young is None:
            reasons.append(f"T-score omitted: no young-adult reference for {word} is configured"
                           + (" (none is published for DXR-BMD in men)." if sex == "M" else "."))
        else:
            t = (bmd_g_cm2 - young.mean_g_cm2) / young.sd_g_cm2
            who = who_category(t)
        z = None
        matched = None
        if age_years is None:
            reasons.append("Z-score omitted: the patient's age is not known (PatientAge or birth date).")
        else:
            matched = self.age_matched(sex, age_years)
            if matched is None:
                reasons.append(f"Z-score omitted: no age-matched reference for {word} aged {age_years:g} is configured.")
            else:
                z = (bmd_g_cm2 - matched.mean_g_cm2) / matched.sd_g_cm2
        names = [r.label for r in (young, matched) if r is not None]
        return Scores(t_score=t, z_score=z, who_category=who,
                      reference_name="; ".join(dict.fromkeys(names)) or None,
                      omitted_reason=" ".join(reasons) or None)


def load_reference_tables(texts: Iterable[str]) -> ReferenceTables:
    """Parse and validate reference CSV texts (pure: the caller reads the files)."""
    return ReferenceTables.from_csv_texts(texts)
