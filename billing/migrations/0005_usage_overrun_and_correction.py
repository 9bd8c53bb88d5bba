"""What a request cost beyond its hold, and whether its usage was corrected.

Adding columns with defaults rebuilds the table on SQLite, which drops the settle trigger of
0002: it is made again here (PostgreSQL keeps it).
"""

import importlib
from decimal import Decimal

from django.db import migrations, models

trigger = importlib.import_module("billing.migrations.0002_settle_trigger")


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0004_usage_cache_tokens'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='overrun',
            field=models.DecimalField(decimal_places=10, default=Decimal('0'), help_text='What the request cost beyond its hold (charged: the balance may go below zero by this much).', max_digits=20),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='usage_corrected',
            field=models.BooleanField(default=False, help_text='The upstream reported usage that could not be right (negative, fractional, absurd): the tokens were estimated instead.'),
        ),
        migrations.RunPython(
            trigger.run({"sqlite": trigger.SQLITE_DROP + trigger.SQLITE}),
            migrations.RunPython.noop,
        ),
    ]
