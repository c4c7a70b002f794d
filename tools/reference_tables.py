"""Write the shipped reference sets ``config/reference/<set>.csv`` (run it after changing a number here).

Every set has, for each sex, one ``young_adult`` row (T-scores) and 5-year ``age_matched`` bands
from 20 to 90 (Z-scores). What is published is marked ``derived=false``; what we computed says
how in ``derivation``; rows that rest on a model rather than a measured table are
``provisional=true`` (the SR, the JSON and the picture say so). Sources are in docs/method.md §5.

    .venv/bin/python tools/reference_tables.py            # rewrite config/reference/*.csv
    .venv/bin/python tools/reference_tables.py --check    # exit 1 when a shipped file differs
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "config" / "reference"

MEN_FACTOR = 1.128
"""Men's DXR-BMD = women's x 1.128 "at every age" (Boettcher et al., J Clin Densitom 2006;9(3):341-50, abstract)."""
LOSS_START_YEARS = 45.0
LOSS_PER_YEAR = 0.008
"""Loss after 45: 0.7-0.9 %/yr in German women (Eur Radiol 2006;16:811-7, abstract); the midpoint, compounded."""
BANDS = [(a, a + 5) for a in range(20, 85, 5)] + [(85, 91)]
"""Age bands (years, age_min <= age < age_max); the last is 85-91 so that a 90-year-old is covered."""
BOETTCHER = "Boettcher et al., J Clin Densitom 2006;9(3):341-50 (abstract: men +12.8 % at every age)"
LOSS = "Eur Radiol 2006;16:811-7 (abstract: 540 German women, peak 25-45 y, loss 0.7-0.9 %/yr after 45)"


@dataclass(frozen=True)
class Anchor:
    """One set's published (or derived) young-adult women's reference."""

    name: str
    title: str
    mean: float
    sd: float
    n: str
    source: str
    where: str
    derived: bool
    derivation: str = ""


ANCHORS = [
    Anchor("black2001", "US women (Black 2001)", 0.598, 0.034, "832",
           "Black DM et al., J Clin Densitom 2001;4(1):5-12 (US white women 20-79 y, Pronosco X-posure)",
           "abstract: peak DXR-BMD at 38 y 0.598 +/- 0.034 g/cm2 (paper not read)", False),
    Anchor("wilczek2013", "Sectra anchor (Wilczek 2013)", 0.583, 0.047, "not stated",
           "Wilczek ML et al., Eur Radiol 2013, doi:10.1007/s00330-012-2706-9 (Sectra DXR, Swedish women)",
           "Fig. 1 worked examples: 0.64 -> T +1.18, 0.49 -> T -1.90, 0.41 -> T -3.70", True,
           "least-squares fit BMD = mean + T*SD to the three examples: mean 0.5830, SD 0.0473 "
           "(residuals <= 0.0032 g/cm2); rounded to 0.583 +/- 0.047"),
    Anchor("sweden2013", "Swedish women (LMS 2013)", 0.597, 0.050, "669",
           "J Clin Densitom 2013;16(2):183-8 (Orebro women 20-79 y, Sectra DXR on MDM L30, LMS fit; DiVA diva2:542722)",
           "abstract: peak at 43.4 y 0.597 +/- 0.050 g/cm2", False),
    Anchor("african_american2005", "African-American women (2005)", 0.6045, 0.0529, "236",
           "Osteoporos Int 2005;16:1621-6 (African-American women 20-79 y, per decade)",
           "abstract: young (20-40 y) 0.6045 +/- 0.0529 g/cm2", False),
]

COLUMNS = ["sex", "age_min", "age_max", "mean_g_cm2", "sd_g_cm2", "kind", "n", "source", "where", "derived",
           "derivation", "provisional"]


def model_mean(peak: float, age: float) -> float:
    """Women's modelled mean DXR-BMD at ``age``: the peak until 45, then -0.8 %/yr compounded."""
    return peak * (1.0 - LOSS_PER_YEAR) ** max(0.0, age - LOSS_START_YEARS)


def rows(anchor: Anchor) -> list[dict[str, str]]:
    out = [dict(sex="F", age_min="20", age_max="46", mean_g_cm2=f"{anchor.mean:g}", sd_g_cm2=f"{anchor.sd:g}",
                kind="young_adult", n=anchor.n, source=anchor.source, where=anchor.where,
                derived=str(anchor.derived).lower(), derivation=anchor.derivation, provisional="false")]
    out.append(dict(sex="M", age_min="20", age_max="50", mean_g_cm2=f"{anchor.mean * MEN_FACTOR:.4f}",
                    sd_g_cm2=f"{anchor.sd * MEN_FACTOR:.4f}", kind="young_adult", n="",
                    source=f"{anchor.source}; {BOETTCHER}", where=f"{anchor.where}; men/women ratio from the abstract",
                    derived="true",
                    derivation=f"women's young-adult mean and SD x {MEN_FACTOR} (same CV); no male DXR-BMD table read",
                    provisional="true"))
    for sex, factor in (("F", 1.0), ("M", MEN_FACTOR)):
        for lo, hi in BANDS:
            mid = (lo + min(hi, lo + 5)) / 2.0
            mean = model_mean(anchor.mean, mid) * factor
            out.append(dict(
                sex=sex, age_min=str(lo), age_max=str(hi), mean_g_cm2=f"{mean:.4f}", sd_g_cm2=f"{anchor.sd * factor:.4f}",
                kind="age_matched", n="", source=f"model on {anchor.source}; {LOSS}" + (f"; {BOETTCHER}" if sex == "M" else ""),
                where="model, not a published table", derived="true",
                derivation=(f"young-adult mean {anchor.mean:g} until 45 y, then x (1 - {LOSS_PER_YEAR})^(age - 45) "
                            f"at the band midpoint {mid:g} y" + (f", x {MEN_FACTOR} for men" if sex == "M" else "")
                            + f"; SD the young-adult SD{f' x {MEN_FACTOR}' if sex == 'M' else ''}, constant with age"),
                provisional="true"))
    return out


def render(anchor: Anchor) -> str:
    buf = io.StringIO()
    buf.write(f"# DXR-BMD reference set '{anchor.name}': {anchor.title}. Written by tools/reference_tables.py;\n"
              "# edit there and re-run. provisional=true rows rest on a model (docs/method.md section 5).\n")
    buf.write(f"# name: {anchor.title}\n")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(anchor))
    return buf.getvalue()


def main(argv: list[str]) -> int:
    check = "--check" in argv
    differ = []
    for anchor in ANCHORS:
        path = OUT_DIR / f"{anchor.name}.csv"
        text = render(anchor)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                differ.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if differ:
        print("differ from tools/reference_tables.py: " + ", ".join(differ), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
