"""Create or update the demo superuser from DJANGO_ADMIN_USERNAME / DJANGO_ADMIN_PASSWORD.

Idempotent: prints one line, "superuser <name>: created|updated|unchanged", so a
deploy can tell whether anything changed. Never prints the password.
"""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction


class Command(BaseCommand):
    help = "Create or update a superuser from DJANGO_ADMIN_USERNAME, DJANGO_ADMIN_PASSWORD (and DJANGO_ADMIN_EMAIL)."

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_ADMIN_USERNAME", "").strip()
        password = os.environ.get("DJANGO_ADMIN_PASSWORD", "")
        email = os.environ.get("DJANGO_ADMIN_EMAIL", "").strip()
        if not username or not password:
            raise CommandError("DJANGO_ADMIN_USERNAME and DJANGO_ADMIN_PASSWORD must both be set.")

        User = get_user_model()
        with transaction.atomic():
            user = User.objects.select_for_update().filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                User.objects.create_superuser(username=username, email=email, password=password)
                state = "created"
            else:
                changed = []
                if not user.check_password(password):
                    user.set_password(password)
                    changed.append("password")
                for flag in ("is_active", "is_staff", "is_superuser"):
                    if not getattr(user, flag):
                        setattr(user, flag, True)
                        changed.append(flag)
                if email and user.email != email:
                    user.email = email
                    changed.append("email")
                if changed:
                    user.save()
                state = "updated" if changed else "unchanged"
        self.stdout.write(f"superuser {username}: {state}")
