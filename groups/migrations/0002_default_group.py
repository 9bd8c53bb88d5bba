from django.db import migrations


def create_default_group(apps, schema_editor):
    Group = apps.get_model("groups", "Group")
    # The values of groups.models.DEFAULT_GROUP_NAME / DEFAULT_GROUP_FIELDS, frozen here.
    Group.objects.get_or_create(
        name="default", defaults={"description": "Every user starts here.", "auto_priority": 100}
    )


class Migration(migrations.Migration):
    dependencies = [("groups", "0001_initial")]

    operations = [migrations.RunPython(create_default_group, migrations.RunPython.noop)]
