"""Server-drawn SVG charts: no JavaScript, no chart library, readable by screen readers.

Each chart is an `<svg role="img">` with an `aria-label`, a `<title>` and a `<desc>`, and the page
puts the same numbers in a table beside it. Colours are SVG attributes (the page's CSP forbids
inline styles).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

__all__ = ["bars", "hourly"]

W, H, PAD_L, PAD_B, PAD_T = 600, 200, 36, 34, 10


def _svg(label: str, body: list[str], desc: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title><desc>{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def _axes(top: float) -> list[str]:
    plot_h = H - PAD_B - PAD_T
    out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W}" y2="{H - PAD_B}" stroke="#888" stroke-width="1"/>']
    for frac in (0.5, 1.0):
        y = H - PAD_B - plot_h * frac
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W}" y2="{y:.1f}" stroke="#ddd" stroke-width="1"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                   f'{top * frac:g}</text>')
    return out


def bars(label: str, values: list[tuple[str, int]], *, colour: str = "#3569b5") -> Markup:
    """A histogram or category bar chart of (label, count)."""
    top = max([v for _, v in values] + [1])
    plot_w, plot_h = W - PAD_L, H - PAD_B - PAD_T
    step = plot_w / max(1, len(values))
    body = _axes(top)
    for i, (name, value) in enumerate(values):
        h = plot_h * value / top
        x = PAD_L + i * step + step * 0.15
        body.append(f'<rect x="{x:.1f}" y="{H - PAD_B - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                    f'fill="{colour}"><title>{escape(name)}: {value}</title></rect>')
        body.append(f'<text x="{x + step * 0.35:.1f}" y="{H - PAD_B + 14}" text-anchor="middle" font-size="10" '
                    f'fill="#333">{escape(name)}</text>')
    desc = ", ".join(f"{n}: {v}" for n, v in values)
    return _svg(label, body, desc)


def hourly(label: str, series: list[tuple[float, int, int, int]], *, target: float = 0.95) -> Markup:
    """Runs per hour as bars and the success rate per hour as a line, with the target as a dashed line."""
    top = max([n for _, n, _, _ in series] + [1])
    plot_w, plot_h = W - PAD_L - 30, H - PAD_B - PAD_T
    step = plot_w / max(1, len(series))
    body = _axes(top)
    points = []
    for i, (hour, n, executed, ok) in enumerate(series):
        h = plot_h * n / top
        x = PAD_L + i * step
        stamp = datetime.fromtimestamp(hour, UTC).strftime("%m-%d %H:00")
        rate = f"{ok / executed * 100:.0f} %" if executed else "n/a"
        body.append(f'<rect x="{x + step * 0.1:.1f}" y="{H - PAD_B - h:.1f}" width="{max(step * 0.8, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="#9db8e0"><title>{stamp} UTC: {n} runs, success {rate}</title></rect>')
        if executed:
            points.append(f"{x + step / 2:.1f},{H - PAD_B - plot_h * ok / executed:.1f}")
        if i % max(1, len(series) // 6) == 0:
            body.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" font-size="10" fill="#333">{stamp}</text>')
    y_target = H - PAD_B - plot_h * target
    body.append(f'<line x1="{PAD_L}" y1="{y_target:.1f}" x2="{W - 30}" y2="{y_target:.1f}" stroke="#c0392b" '
                f'stroke-dasharray="4 3" stroke-width="1"/>')
    body.append(f'<text x="{W - 28}" y="{y_target + 4:.1f}" font-size="10" fill="#c0392b">{target * 100:g} %</text>')
    if points:
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#1e7d32" stroke-width="2"/>')
    total = sum(n for _, n, _, _ in series)
    executed = sum(e for _, _, e, _ in series)
    ok = sum(o for _, _, _, o in series)
    desc = (f"{total} runs over {len(series)} hours; success rate {ok / executed * 100:.1f} %" if executed
            else f"{total} runs over {len(series)} hours")
    return _svg(label, body, desc + f"; target line at {target * 100:g} %")
