"""What every admin page shares: the stylesheet and the status badge."""

from django.utils.html import format_html

CSS = {"all": ["airouter/admin.css"]}


def badge(text: str, level: str, title: str = ""):
    return format_html(
        '<span class="airouter-badge airouter-badge-{}" title="{}">{}</span>', level, title, text
    )
