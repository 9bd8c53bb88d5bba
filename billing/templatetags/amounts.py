"""`{% load amounts %}` then `{{ amount|money }}`: an amount of money or a rate as people read
it, with every digit it has (0.0000015, never 0.000000; 1000, never 1E+3)."""

from decimal import Decimal, InvalidOperation

from django import template

from billing.pricing import money as write_money

register = template.Library()


@register.filter
def money(value) -> str:
    if value is None or value == "":
        return "—"
    try:
        return write_money(value if isinstance(value, Decimal) else Decimal(str(value)))
    except (InvalidOperation, ValueError, TypeError):
        return str(value)
