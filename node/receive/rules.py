"""The declarative filter: which received instances the node analyses.

An instance is analysed when it matches every condition of at least one ``[[rules.analyse]]``
rule and no ``[[rules.ignore]]`` rule. A condition is a DICOM keyword and a list of patterns
(case-insensitive ``fnmatch``; ``""`` matches an empty or absent attribute). Everything else
is acknowledged and dropped by the receiver with a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydicom.datadict import dictionary_VR

from node.config import RuleConfig, RulesConfig

__all__ = ["Decision", "evaluate", "attribute_text"]


@dataclass(frozen=True)
class Decision:
    analyse: bool
    rule: str | None
    """Name of the deciding rule: the matching analyse rule, or the matching ignore rule."""
    reason: str
    """One line saying why, naming keywords and values (values of patient attributes are not shown)."""


def attribute_text(dataset: Any, keyword: str) -> str:
    """The attribute's value as text for matching ('' when absent or empty; multi-values joined by \\)."""
    try:
        value = dataset.get(keyword, None)
    except Exception:  # a malformed element must not break the decision
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _is_patient_data(keyword: str) -> bool:
    """Person names and Patient* attributes are never echoed into logs or explanations."""
    try:
        vr = dictionary_VR(keyword)
    except KeyError:
        vr = ""
    return vr == "PN" or keyword.startswith("Patient") or keyword.startswith("OtherPatient")


def _shown(keyword: str, text: str) -> str:
    return f"{keyword} (value not shown: patient data)" if _is_patient_data(keyword) else f'{keyword} "{text}"'


def _match_rule(rule: RuleConfig, dataset: Any) -> tuple[bool, str]:
    """(matches, explanation of the first failing or all passing conditions)."""
    seen = []
    for keyword, patterns in rule.conditions:
        text = attribute_text(dataset, keyword)
        if not any(fnmatchcase(text.upper(), p.upper()) for p in patterns):
            shown = [p if p else '""' for p in patterns]
            return False, f'{_shown(keyword, text)} is not one of {", ".join(shown)}'
        seen.append(_shown(keyword, text))
    return True, ", ".join(seen)


def evaluate(rules: RulesConfig, dataset: Any) -> Decision:
    """Decide whether to analyse ``dataset`` (a pydicom Dataset, pixel data not needed)."""
    for rule in rules.ignore:
        matched, why = _match_rule(rule, dataset)
        if matched:
            return Decision(False, rule.name, f"ignored by rule {rule.name!r}: {why}")
    misses = []
    for rule in rules.analyse:
        matched, why = _match_rule(rule, dataset)
        if matched:
            return Decision(True, rule.name, f"analysed by rule {rule.name!r}: {why}")
        misses.append(f"rule {rule.name!r}: {why}")
    if not misses:
        return Decision(False, None, "no [[rules.analyse]] rule is configured")
    return Decision(False, None, "matches no analyse rule (" + "; ".join(misses) + ")")
