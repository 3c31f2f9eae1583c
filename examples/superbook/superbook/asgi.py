"""ASGI entry point (not used by the collection's roles, kept for completeness)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "superbook.settings")

application = get_asgi_application()
