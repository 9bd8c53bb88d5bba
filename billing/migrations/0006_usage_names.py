"""The user's, group's and channel's names kept on each usage record (written when the record is
written or settled), so a record still says whose it was once the row behind a reference is
deleted. Records written before this migration keep empty names.

Adding columns with defaults rebuilds the table on SQLite, which drops the settle trigger of
0002: it is made again here (PostgreSQL keeps it).
"""

import importlib

from django.db import migrations, models

trigger = importlib.import_module("billing.migrations.0002_settle_trigger")


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_usage_overrun_and_correction'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='channel_name',
            field=models.CharField(blank=True, default='', max_length=100),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='group_name',
            field=models.CharField(blank=True, default='', max_length=100),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='username',
            field=models.CharField(blank=True, default='', max_length=150),
        ),
        migrations.RunPython(
            trigger.run({"sqlite": trigger.SQLITE_DROP + trigger.SQLITE}),
            migrations.RunPython.noop,
        ),
    ]
