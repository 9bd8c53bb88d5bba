from django.db import migrations

from groups.models import DEFAULT_GROUP_FIELDS, DEFAULT_GROUP_NAME


def create_default_group(apps, schema_editor):
    Group = apps.get_model("groups", "Group")
    Group.objects.get_or_create(name=DEFAULT_GROUP_NAME, defaults=DEFAULT_GROUP_FIELDS)


class Migration(migrations.Migration):
    dependencies = [("groups", "0001_initial")]

    operations = [migrations.RunPython(create_default_group, migrations.RunPython.noop)]
