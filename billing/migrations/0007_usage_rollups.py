"""Hourly usage rollups for the admin dashboard (billing/rollups.py) and their watermark.

Existing records are not summed here: `manage.py rollup_usage` builds the rollups on its first
run (a new table changes nothing on the usage records, so the settle trigger stays).
"""

from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0006_usage_names'),
    ]

    operations = [
        migrations.CreateModel(
            name='RollupWatermark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField(blank=True, null=True)),
                ('refreshed', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField(help_text="The hour's start (UTC).")),
                ('group_name', models.CharField(blank=True, default='', max_length=100)),
                ('model', models.CharField(blank=True, default='', max_length=200)),
                ('channel_name', models.CharField(blank=True, default='', max_length=100)),
                ('requests', models.PositiveIntegerField(default=0)),
                ('errors', models.PositiveIntegerField(default=0, help_text='Records neither successful nor still in flight.')),
                ('pending', models.PositiveIntegerField(default=0, help_text='Records still in flight when the hour was summed.')),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('cached_tokens', models.BigIntegerField(default=0)),
                ('cache_write_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('cost', models.DecimalField(decimal_places=10, default=Decimal('0'), max_digits=20)),
            ],
            options={
                'ordering': ['-hour'],
                'constraints': [models.UniqueConstraint(fields=('hour', 'group_name', 'model', 'channel_name'), name='billing_usagerollup_unique_hour_keys')],
            },
        ),
    ]
