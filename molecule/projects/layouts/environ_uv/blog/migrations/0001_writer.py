from django.contrib.auth.hashers import make_password
from django.db import migrations


def add_writer(apps, schema_editor):
    apps.get_model("auth", "User").objects.create(username="writer", password=make_password("writer-password"))


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(add_writer, migrations.RunPython.noop)]
