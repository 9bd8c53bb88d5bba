"""Cache and reasoning tokens on usage records, and the rates applied to them.

SQLite cannot add a column with a default in place: Django rebuilds the table, which drops the
settle trigger of 0002, so it is made again here (PostgreSQL keeps it).
"""

import importlib
from decimal import Decimal

from django.db import migrations, models

trigger = importlib.import_module("billing.migrations.0002_settle_trigger")


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0003_usage_status_pending'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='cache_write_rate',
            field=models.DecimalField(decimal_places=6, default=Decimal('0'), max_digits=20),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cache_write_tokens',
            field=models.PositiveIntegerField(default=0, help_text='Prompt tokens written to the prompt cache (part of the prompt).'),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cached_input_rate',
            field=models.DecimalField(decimal_places=6, default=Decimal('0'), max_digits=20),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='cached_tokens',
            field=models.PositiveIntegerField(default=0, help_text='Prompt tokens read from the prompt cache (part of the prompt).'),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='reasoning_tokens',
            field=models.PositiveIntegerField(default=0, help_text='Completion tokens spent reasoning (part of the completion).'),
        ),
        migrations.RunPython(
            trigger.run({"sqlite": trigger.SQLITE_DROP + trigger.SQLITE}),
            migrations.RunPython.noop,
        ),
    ]
