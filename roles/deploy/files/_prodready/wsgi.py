"""The WSGI app Gunicorn runs by default (gunicorn_wsgi_module): the project's own.

Django's runserver finds the app the same way: the WSGI_APPLICATION setting (the
project's wsgi.py, with whatever it wraps the app in), or Django's plain handler when
the setting is unset. So the gunicorn role needs no module name of the project's.
"""

import django
from django.core.servers.basehttp import get_internal_wsgi_application

django.setup(set_prefix=False)
application = get_internal_wsgi_application()
