"""Reference tables for T- and Z-scores, and the WHO category.

A reference set is CSV text (``config/reference/<set>.csv``; lines starting with ``#`` are
comments, ``# name: ...`` names the set) with the columns ``sex, age_min, age_max, mean_g_cm2,
sd_g_cm2, kind, source, derived`` and, optionally, ``n, where, derivation, provisional``:

* ``sex`` ``F`` or ``M``; ``age_min <= age < age_max`` in years;
* ``kind`` ``young_adult`` (for T-scores; one row per sex, it applies to patients of any age and
  its age band describes the reference group) or ``age_matched`` (for Z-scores; bands of one
  sex must not overlap);
* ``source`` a citation, ``where`` the place in it (table, figure, abstract), ``n`` the cohort
  size; ``derived`` ``true`` when the numbers were computed by us rather than published, with
  ``derivation`` saying how; ``provisional`` ``true`` when the row rests on a model rather than a
  measured table (every score from it is marked provisional in the JSON, the SR and the picture).

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
OPTIONAL_COLUMNS = ("n", "where", "derivation", "provisional")
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
    n: str = ""
    where: str = ""
    derivation: str = ""
    provisional: bool = False

    def covers(self, age_years: float) -> bool:
        return self.age_min <= age_years < self.age_max

    @property
    def label(self) -> str:
        return self.source + (" [provisional]" if self.provisional else " [derived]" if self.derived else "")

    def describe(self) -> str:
        """Short words for the result: whose mean and SD, and whether provisional."""
        who = {"F": "women", "M": "men"}[self.sex]
        if self.kind == "young_adult":
            what = f"young-adult {who}"
        else:
            what = f"{who} aged {self.age_min:g}-{self.age_max:g}"
        n = f", n {self.n}" if self.n and self.n.isdigit() else ""
        flag = ", provisional" if self.provisional else ", derived" if self.derived else ""
        return f"{what} {self.mean_g_cm2:g} +/- {self.sd_g_cm2:g} g/cm2{n}{flag}"


@dataclass(frozen=True)
class Scores:
    t_score: float | None = None
    z_score: float | None = None
    who_category: str | None = None
    reference_name: str | None = None
    omitted_reason: str | None = None
    """Why a score is missing (one sentence), or None when both were computed."""
    provisional: bool = False
    """True when the T- or Z-score comes from a provisional (modelled) row."""
    young_adult: ReferenceRow | None = None
    """The row of the T-score (its mean and SD go into the SR's TID 311 on DXR-BMD)."""
    age_matched: ReferenceRow | None = None
    """The row of the Z-score."""


def who_category(t_score: float) -> str:
    """WHO category from a T-score: normal (>= -1), osteopenia, osteoporosis (<= -2.5)."""
    if t_score >= -1.0:
        return "normal"
    if t_score <= -2.5:
        return "osteoporosis"
    return "osteopenia"


def _parse_bool(text: str, where: str, column: str = "derived") -> bool:
    t = text.strip().lower()
    if t in ("true", "yes", "1"):
        return True
    if t in ("false", "no", "0"):
        return False
    raise ValueError(f"{where}: {column} must be true or false, not {text!r}")


def _parse_float(text: str, name: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, not {text!r}")
    return value


def set_name(text: str) -> str | None:
    """The ``# name: ...`` comment of a reference set, or None."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("# name:"):
            return stripped[len("# name:"):].strip() or None
    return None


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
        derived = _parse_bool(rec["derived"], where)
        provisional = _parse_bool(rec["provisional"], where, "provisional") if rec.get("provisional") else False
        if derived and "derivation" in header and not rec.get("derivation"):
            raise ValueError(f"{where}: derived is true but derivation is empty; say how the numbers were computed")
        rows.append(ReferenceRow(sex, age_min, age_max, mean, sd, kind, rec["source"], derived,
                                 n=rec.get("n", ""), where=rec.get("where", ""), derivation=rec.get("derivation", ""),
                                 provisional=provisional))
    return rows


@dataclass
class ReferenceTables:
    rows: list[ReferenceRow] = field(default_factory=list)
    name: str = "site reference"
    """The set's name (``# name:`` line, else the file name), shown with every score."""

    def __post_init__(self) -> None:
        for sex in ("F", "M"):
            young = [r for r in self.rows if r.sex == sex and r.kind == "young_adult"]
            if len(young) > 1:
                raise ValueError(f"{len(young)} young_adult rows for sex {sex}; keep exactly one "
                                 "(several reference sets loaded? choose one with [reference] table)")
            matched = sorted((r for r in self.rows if r.sex == sex and r.kind == "age_matched"), key=lambda r: r.age_min)
            for a, b in zip(matched, matched[1:]):
                if b.age_min < a.age_max:
                    raise ValueError(f"age_matched rows for sex {sex} overlap ({a.age_min}-{a.age_max} and {b.age_min}-{b.age_max})")

    @classmethod
    def from_csv_texts(cls, texts: Iterable[str], name: str | None = None) -> "ReferenceTables":
        rows: list[ReferenceRow] = []
        names = []
        for i, text in enumerate(texts):
            rows.extend(parse_reference_csv(text, name=f"table {i + 1}"))
            names.append(set_name(text))
        found = [n for n in names if n]
        return cls(rows, name=(found[0] if len(found) == 1 and len(names) == 1 else name) or name or "site reference")

    @property
    def provisional(self) -> bool:
        """True when any row of the set is provisional (check-config says so)."""
        return any(r.provisional for r in self.rows)

    def summary(self) -> str:
        """One line for check-config: the set, its T-score anchors, what is provisional."""
        parts = []
        for sex, word in (("F", "women"), ("M", "men")):
            young = self.young_adult(sex)
            matched = [r for r in self.rows if r.sex == sex and r.kind == "age_matched"]
            t = f"T {young.mean_g_cm2:g} +/- {young.sd_g_cm2:g}" + (" provisional" if young.provisional else "") if young else "no T"
            z = (f"Z ages {min(r.age_min for r in matched):g}-{max(r.age_max for r in matched):g}"
                 + (" provisional" if any(r.provisional for r in matched) else "")) if matched else "no Z"
            parts.append(f"{word}: {t}, {z}")
        flag = "PROVISIONAL (parts rest on a model)" if self.provisional else "not provisional"
        return f"{self.name}: {flag}; " + "; ".join(parts)

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
        used = [(k, r) for k, r in (("T", young), ("Z", matched)) if r is not None]
        name = (f"{self.name} (" + "; ".join(f"{k}: {r.describe()}" for k, r in used) + ")") if used else None
        return Scores(t_score=t, z_score=z, who_category=who, reference_name=name,
                      omitted_reason=" ".join(reasons) or None,
                      provisional=any(r.provisional for _, r in used), young_adult=young, age_matched=matched)


def load_reference_tables(texts: Iterable[str], name: str | None = None) -> ReferenceTables:
    """Parse and validate reference CSV texts (pure: the caller reads the files)."""
    return ReferenceTables.from_csv_texts(texts, name=name)
