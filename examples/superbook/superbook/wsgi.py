"""WSGI entry point: gunicorn serves superbook.wsgi:application."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "superbook.settings")

application = get_wsgi_application()
