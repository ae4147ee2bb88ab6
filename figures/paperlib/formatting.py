"""How every number and label is printed: ``fmt`` (the one formatter, Markdown or LaTeX), LaTeX escaping,
the letters-only macro names of numbers.tex, and the few small wording helpers (block labels, a verb chosen
by a condition, a published value as a caption prints it). It reads nothing and depends only on
``figures.paper_values``, so every other module of the package can import it.
"""
from __future__ import annotations

import math
from typing import Any

from figures import paper_values as PV


DASH = {"md": "—", "tex": "--"}
_TEX_SUBS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "β": r"$\beta$", "λ": r"$\lambda$", "α": r"$\alpha$",
    "ρ": r"$\rho$", "η": r"$\eta$", "θ": r"$\theta$", "π": r"$\pi$", "σ": r"$\sigma$", "≤": r"$\le$", "≥": r"$\ge$",
    "×": r"$\times$", "–": "--", "—": "---", "≈": r"$\approx$", "→": r"$\to$", "‖": r"$\|$", "⟨": r"$\langle$",
    "⟩": r"$\rangle$", "′": "'", "²": r"$^2$", "…": r"\ldots{}", "<": r"$<$", ">": r"$>$", "±": r"$\pm$",
    "†": r"$^\dagger$", "⊥": r"$\perp$", "“": "``", "”": "''", "√": r"$\surd$", "·": r"$\cdot$", "−": "$-$",
    "|": r"$|$", "§": r"\S{}", "Σ": r"$\Sigma$", "Δ": r"$\Delta$", "ℓ": r"$\ell$", "★": r"$\star$", "∑": r"$\sum$",
    "’": "'", "‘": "`", "Λ": r"$\Lambda$", "∞": r"$\infty$", "÷": r"$\div$", "⁻": r"$^{-}$", "⁵": r"$^{5}$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SUBS.get(ch, ch) for ch in str(text))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _sci_parts(v: float, digits: int = 2) -> tuple[str, int]:
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return mant, int(exp)


def fmt(value: Any, kind: str, target: str = "md") -> str:
    """Every number shown anywhere is printed by this function.

    kinds: pct (a fraction shown as a percentage, 1 decimal), pp (a difference of fractions shown in signed
    percentage points, 1 decimal: 0.014 -> +1.4), num0..num4 (fixed decimals), signed (3
    decimals with sign, scientific below 1e-3), int (thousands separators), step (plain integer), sci
    (2 significant digits), x (a ratio, "×"), lr (compact general format), text. A (low, high) pair is a
    range; None or a non-finite number is a dash.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2 and kind != "text":
        lo, hi = (fmt(v, kind, target) for v in value)
        return lo if lo == hi else f"{lo}{'–' if target == 'md' else '--'}{hi}"
    if kind == "text":
        if value is None:
            return DASH[target]
        return str(value) if target == "md" else tex_escape(str(value))
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return DASH[target]
    if isinstance(value, str):                 # a study's own display string (e.g. "diverged")
        return value if target == "md" else tex_escape(value)
    v = float(value)
    math_mode = False
    if kind == "pct":
        s = f"{100 * v:.1f}"
    elif kind == "pp":
        s = f"{100 * v:+.1f}"
    elif kind.startswith("num"):
        s = f"{v:.{int(kind[3:])}f}"
    elif kind == "signed":
        if v != 0 and abs(v) < 1e-3:
            mant, exp = _sci_parts(v)
            s = f"{float(mant):+.1f}e{exp:+03d}" if target == "md" else f"{float(mant):+.1f}\\times10^{{{exp}}}"
            math_mode = target == "tex"
        else:
            s = f"{v:+.3f}"
    elif kind == "int":
        s = f"{int(round(v)):,}"
        if target == "tex":
            s = s.replace(",", "{,}")
    elif kind == "step":
        s = str(int(round(v)))
    elif kind == "sci":
        if v == 0:
            s = "0"
        else:
            mant, exp = _sci_parts(v)
            s = f"{mant}e{exp:+03d}" if target == "md" else f"{mant}\\times10^{{{exp}}}"
            math_mode = target == "tex"
    elif kind == "x":
        s = f"{v:,.0f}" if abs(v) >= 10 else (f"{v:.1f}" if abs(v) >= 1 else f"{v:.2f}")
        if target == "tex":
            return s.replace(",", "{,}") + r"\ensuremath{\times}"
        return s + "×"
    elif kind == "lr":
        s = f"{v:g}"
        if "e" in s and target == "tex":
            mant, exp = s.split("e")
            s = f"{mant}\\times10^{{{int(exp)}}}"
            math_mode = True
    else:
        raise ValueError(f"unknown number kind '{kind}'")
    if target == "tex" and (math_mode or s.startswith("-") or s.startswith("+")):
        return f"\\ensuremath{{{s}}}"
    return s


def pct_points(x: float) -> float:
    """A difference of two fractions in percentage points (for kind num1/num2)."""
    return 100.0 * x


_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]


def macro_name(key: str) -> str:
    """snake_case key -> a LaTeX macro name of letters only: 'k95_trunk' -> 'KNineFiveTrunk'."""
    out = []
    for part in key.split("_"):
        word = "".join(_DIGITS[int(ch)] if ch.isdigit() else ch for ch in part)
        out.append(word[:1].upper() + word[1:])
    name = "".join(out)
    if not name.isalpha():
        raise ValueError(f"number key '{key}' does not give a letters-only macro name")
    return name


# ---------------------------------------------------------------- wording
def block_label(b: int) -> str:
    return f"block {b}"


def verb(condition: bool, yes: str, no: str) -> str:
    return yes if condition else no


def pv(key: str) -> str:
    """A published value as printed in captions (from figures/paper_values.py, never typed here)."""
    v = PV.VALUES[key]
    return fmt(v.value, v.kind)


def paper_rows(rows: list[dict], *fields: tuple[str, str]) -> str:
    """Published table rows as 'label value, ...' with each field printed by ``fmt`` (key, kind)."""
    return "; ".join(", ".join(fmt(r[k], kind) for k, kind in fields) for r in rows)
