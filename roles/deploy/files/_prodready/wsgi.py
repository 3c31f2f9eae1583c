"""The WSGI app Gunicorn runs by default (gunicorn_wsgi_module): the project's own.

Django's runserver finds the app the same way: the WSGI_APPLICATION setting (the
project's wsgi.py, with whatever it wraps the app in), or Django's plain handler when
the setting is unset. So the gunicorn role needs no module name of the project's.
With PRODREADY_HEALTHCHECK_PATH set (deploy_healthcheck_builtin), the built-in health
check answers that path in front of it.
"""

import os

import django
from django.core.servers.basehttp import get_internal_wsgi_application

django.setup(set_prefix=False)
application = get_internal_wsgi_application()

if os.environ.get("PRODREADY_HEALTHCHECK_PATH"):
    from _prodready.health import HealthCheck

    application = HealthCheck(application, os.environ["PRODREADY_HEALTHCHECK_PATH"])
