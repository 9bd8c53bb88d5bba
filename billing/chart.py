"""A server-rendered SVG chart of requests (bars) and spend (a line) over time: no JavaScript,
no chart library, no build step."""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe

from billing.pricing import money as write_money

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 64, 14, 26


def svg(series: list[tuple[datetime, object]], *, labels: str, money: bool, title: str) -> str:
    """`series`: (bucket start, row with .requests, .errors and .cost) in time order; `labels`
    "hour" or "day" (how the x axis reads)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(series), 1)
    slot = plot_w / count
    most = max((row.requests for _, row in series), default=0) or 1
    dearest = max((row.cost for _, row in series), default=Decimal("0"))
    parts = [
        f'<svg class="airouter-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: requests{" and spend" if money else ""} per {labels}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" '
        f'y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{most:,}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="legend requests" x="{LEFT}" y="{TOP - 3}">requests</text>',
    ]
    every = max(1, round(count / 8))
    points = []
    for i, (start, row) in enumerate(series):
        x = LEFT + i * slot
        local = timezone.localtime(start)
        when = local.strftime("%H:00" if labels == "hour" else "%b %d")
        stamp = local.strftime("%Y-%m-%d %H:00" if labels == "hour" else "%Y-%m-%d")
        tip = f"{stamp}: {row.requests:,} requests"
        if row.errors:
            tip += f", {row.errors:,} errors"
        if money:
            tip += f", spend {write_money(row.cost)}"
        height = plot_h * row.requests / most
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.12:.1f}" y="{TOP + plot_h - height:.1f}" '
            f'width="{slot * 0.76:.1f}" height="{height:.1f}"><title>{escape(tip)}</title></rect>'
        )
        if row.errors:
            error_h = plot_h * row.errors / most
            parts.append(
                f'<rect class="bar-errors" x="{x + slot * 0.12:.1f}" '
                f'y="{TOP + plot_h - error_h:.1f}" width="{slot * 0.76:.1f}" '
                f'height="{error_h:.1f}"><title>{escape(tip)}</title></rect>'
            )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{when}</text>'
            )
        if money and dearest > 0:
            y = TOP + plot_h - float(plot_h * row.cost / dearest)
            points.append(f"{x + slot / 2:.1f},{y:.1f}")
    if money:
        right = LEFT + plot_w + 6
        parts.append(
            f'<text class="tick spend" x="{right}" y="{TOP + 4}">{write_money(dearest)}</text>'
            f'<text class="tick spend" x="{right}" y="{TOP + plot_h}">0</text>'
            f'<text class="legend spend" x="{LEFT + plot_w}" y="{TOP - 3}" '
            'text-anchor="end">spend</text>'
        )
        if points:
            parts.append(f'<polyline class="spend-line" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - built from numbers and escaped text
